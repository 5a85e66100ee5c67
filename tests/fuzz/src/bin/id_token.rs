//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/id_token -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::id_token(data));
}
