//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/auth0_export_stream -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::auth0_export_stream(data));
}
