//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/token_request -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::token_request(data));
}
