//! AFL++ target: `cargo afl fuzz -i tests/fuzz/corpus/import_auth0_bulk -o <out> <this binary>`.
fn main() {
    afl::fuzz!(|data: &[u8]| switchyard_fuzz::import_auth0_bulk(data));
}
