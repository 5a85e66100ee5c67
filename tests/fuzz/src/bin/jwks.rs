//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/jwks -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::jwks(data));
}
