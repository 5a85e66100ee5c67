//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/upstream_token_response -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::upstream_token_response(data));
}
