//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/import_okta_csv -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::import_okta_csv(data));
}
