//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/config -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::config(data));
}
