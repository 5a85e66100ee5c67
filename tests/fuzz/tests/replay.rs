//! The fuzz targets as a regression test: every file of each target's
//! corpus (`corpus/<target>/`, minimised from AFL++ runs) goes through the
//! target, then a bounded number of inputs mutated from it (bit flips,
//! byte edits, splices, boundary numbers), from a fixed seed so a failure
//! reproduces. A panic fails the test and names the target and the input,
//! which is also written to `target/fuzz-failures/`.
//!
//! `FUZZ_MUTATIONS` sets the number of generated inputs per target
//! (default 300); `FUZZ_TARGET` runs one target; `FUZZ_SEED` changes the
//! seed.

use std::path::{Path, PathBuf};

use switchyard_fuzz::TARGETS;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read");
            (p, data)
        })
        .collect()
}

/// xorshift64*: a reproducible stream without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that tend to find edge cases in parsers.
const INTERESTING: &[&[u8]] = &[
    b"0",
    b"-1",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"1e309",
    b"null",
    b"[]",
    b"{}",
    b"\"\"",
    b"%",
    b"%zz",
    b"%00",
    b"+",
    b"&",
    b"=",
    b"==",
    b":",
    b".",
    b"..",
    b"\xff",
    b"\xc3",
    b"\\u0000",
    b"\\ud800",
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"{{",
    b"}",
    b"[[",
    b"]]]",
    b"a=1&a=2",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                let n = rng.below(out.len() - i + 1).min(16);
                out.drain(i..i + n);
            }
            3 => {
                let i = rng.below(out.len() + 1);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(i..i, v.iter().copied());
            }
            4 if !other.is_empty() => {
                let i = rng.below(out.len() + 1);
                let j = rng.below(other.len());
                let n = rng.below(other.len() - j).min(64) + 1;
                out.splice(i..i, other[j..j + n].iter().copied());
            }
            5 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.truncate(i);
            }
            _ if !out.is_empty() => {
                let i = rng.below(out.len());
                let n = rng.below(out.len() - i).min(32) + 1;
                let chunk = out[i..i + n].to_vec();
                out.splice(i..i, chunk);
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

fn run_one(target: &str, f: fn(&[u8]), data: &[u8], what: &str) {
    if std::panic::catch_unwind(|| f(data)).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{:016x}", hash(data)));
        let _ = std::fs::write(&file, data);
        panic!(
            "target {target} panicked on {what} (input saved to {}): {:?}",
            file.display(),
            String::from_utf8_lossy(&data[..data.len().min(512)])
        );
    }
}

fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let mutations: usize = std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let only = std::env::var("FUZZ_TARGET").ok();
    for (name, f) in TARGETS {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let files = corpus(name);
        assert!(!files.is_empty(), "corpus/{name} is empty");
        for (path, data) in &files {
            run_one(name, *f, data, &path.display().to_string());
        }
        let mut rng = Rng(seed ^ hash(name.as_bytes()) | 1);
        for i in 0..mutations {
            let (_, a) = &files[rng.below(files.len())];
            let (_, b) = &files[rng.below(files.len())];
            let input = mutate(&mut rng, a, b);
            run_one(name, *f, &input, &format!("mutation {i}"));
        }
        eprintln!(
            "{name}: {} corpus files, {mutations} mutations",
            files.len()
        );
    }
}

/// The invariants above are reachable: the corpus holds tokens the
/// validators accept (signed with the test keys) and tokens they refuse
/// (signed by the attacker's key under the real `kid`).
#[test]
fn the_corpus_holds_accepted_and_refused_tokens() {
    use switchyard::tokens::jwt::{self, Expect};
    use switchyard::upstream::id_token::{self, Expected};
    use switchyard_fuzz::*;

    let read = |target: &str, seed: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
            .join(seed);
        String::from_utf8(std::fs::read(path).expect("seed")).expect("utf-8")
    };
    let expect = Expect {
        issuer: ISSUER,
        audience: Some(AUDIENCE),
        typ: Some(jwt::ACCESS_TOKEN_TYP),
        allow_expired: false,
    };
    let keys = &*KEYS;
    assert!(jwt::verify::<serde_json::Value>(&keys.set, &read("jwt", "seed-00"), &expect).is_ok());
    assert!(jwt::verify::<serde_json::Value>(&keys.set, &read("jwt", "seed-05"), &expect).is_err());
    let expected = Expected {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        nonce: Some(NONCE),
        skew_secs: SKEW,
        now: NOW,
    };
    assert!(id_token::verify(&read("id_token", "seed-00"), &keys.upstream, &expected).is_ok());
    assert!(id_token::verify(&read("id_token", "seed-03"), &keys.upstream, &expected).is_err());
}

/// The configuration target's round trip is reached: a corpus file is a
/// valid configuration.
#[test]
fn the_corpus_holds_a_valid_configuration() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/config/seed-06");
    let text = std::fs::read_to_string(path).expect("seed");
    let (loaded, problems) = switchyard::fuzzing::config(&text);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        loaded.settings().expect("settings").issuer,
        "https://login.example.com/"
    );
}
