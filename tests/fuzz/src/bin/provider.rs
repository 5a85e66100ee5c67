//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/provider -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::provider(data));
}
