//! The fuzz targets' properties (`fuzz/checks.rs`) run on stable over seeded pseudo-random inputs: random
//! bytes and mutations of a small corpus of the inputs each parser is about. Deterministic, bounded (a few
//! seconds), and part of every CI run; `scripts/fuzz.sh` runs the coverage-guided `cargo fuzz` targets on
//! the same properties for longer. `FUZZ_ITERATIONS` raises the count per target.

#[path = "../../../fuzz/checks.rs"]
mod checks;

/// xorshift64*: small, seeded, good enough to spread inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// One input: random bytes, or a corpus entry with a few random edits, or two entries spliced.
fn input(rng: &mut Rng, corpus: &[&[u8]], alphabet: &[u8]) -> Vec<u8> {
    let mut data = match rng.below(4) {
        0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        1 => {
            let (a, b) = (
                corpus[rng.below(corpus.len())],
                corpus[rng.below(corpus.len())],
            );
            [&a[..rng.below(a.len() + 1)], &b[rng.below(b.len() + 1)..]].concat()
        }
        _ => corpus[rng.below(corpus.len())].to_vec(),
    };
    for _ in 0..rng.below(4) {
        let at = rng.below(data.len() + 1);
        let byte = if rng.below(2) == 0 {
            alphabet[rng.below(alphabet.len())]
        } else {
            rng.next() as u8
        };
        match rng.below(3) {
            0 => data.insert(at, byte),
            1 if at < data.len() => data[at] = byte,
            _ if at < data.len() => {
                data.remove(at);
            }
            _ => {}
        }
    }
    data
}

fn run(name: &str, seed: u64, corpus: &[&[u8]], alphabet: &[u8], check: fn(&[u8])) {
    let mut rng = Rng(seed);
    for i in 0..iterations() {
        let data = input(&mut rng, corpus, alphabet);
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(
            result.is_ok(),
            "{name}: input {i} (seed {seed:#x}) failed: {:?}",
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn route_classifier_properties_hold_on_random_targets() {
    let corpus: &[&[u8]] = &[
        b"\x00/api/v4/user/avatar/lpua",
        b"\x01/api/v4/user/avatar/lpua?nocache=1&key=2",
        b"\x00/api/v4/user/avatar/lp%75a?nocache=0",
        b"\x02/api/v4/user/avatar/x",
        b"\x00/api/v4/user/avatar/",
        b"\x00http://evil/api/v4/user/avatar/a?nocache=%31",
        b"\x00/api/v4/user/avatar/a/b?nocache=t;x&nocache=f",
        b"\x41/api/v4/user/avatar/lpua",
        b"\x00/assets/app.3f2a.js?v=1",
        b"\x80/assets/app.js",
        b"\xc0http://Cloud.Example:81/f/abc?x=1",
        b"\x03/api/v4/user/setting/avatar",
        b"\x03/api/v4/admin/user/12",
        b"\x02/api/v4/file/upload",
    ];
    run(
        "route",
        0x5eed_0001,
        corpus,
        b"/%?&=;.aA0+\x40\x80",
        checks::route,
    );
}

#[test]
fn nocache_parser_matches_the_reference_on_random_queries() {
    let corpus: &[&[u8]] = &[
        b"nocache=1",
        b"nocache=0&nocache=1",
        b"no%63ache=tru%65",
        b"nocache=%zz&nocache=T",
        b"a=1;b&nocache=False",
        b"&&nocache=+1",
        b"nocache",
        b"key=1&nocache=TRUE",
    ];
    run(
        "nocache",
        0x5eed_0002,
        corpus,
        b"%&=;+01tTfFrueals",
        checks::nocache,
    );
}

#[test]
fn cache_policy_never_admits_what_it_must_not_on_random_heads() {
    let corpus: &[&[u8]] = &[
        b"\x00\x64\x00content-type:image/png\ncache-control:public, max-age=86400",
        b"\x01\x30\x01cache-control:s-maxage=5, max-age=9\nage:3",
        b"\x00\xc9\x00location:x\ncache-control:max-age=60\nset-cookie:a=b",
        b"\x00\x64\x83content-type:image/png\nexpires:Thu, 01 Jan 2099 00:00:00 GMT\ndate:Thu, 01 Jan 1970 00:00:00 GMT",
        b"\x00\x64\x00content-type:image/png\ncache-control:max-age=9, private=\"x\"\nvary:",
        b"\x00\x64\x00content-type:image/gif\ncache-control:max-age=9\ncontent-length:99999",
        b"\x00\x64\x00content-type:text/css\ncache-control:no-cache\nlast-modified:Thu, 01 Jan 1970 00:00:00 GMT",
        b"\x00\x64\x00content-type:image/png\ncache-control:no-store\ncdn-cache-control:max-age=600",
        b"\x00\x64\x00content-type:image/png\ncache-control:no-store\ncdn-cache-control:Max-Age=600",
        b"\x00\x64\x00content-type:image/png\ncdn-cache-control:s-maxage=60, stale-if-error=600",
        b"\x00\x64\x80cache-control:public, max-age=60, must-revalidate\nvary:accept-encoding\netag:\"a\"",
        b"\x00\x6a\x00content-range:bytes 0-1/9\ncache-control:max-age=60",
        b"\x01\x36\x00cache-control:max-age=600\ncontent-type:text/html",
        b"\x00\x64\x00last-modified:Thu, 01 Jan 1970 00:00:00 GMT\ndate:Thu, 01 Jan 2099 00:00:00 GMT",
    ];
    run(
        "admit",
        0x5eed_0003,
        corpus,
        b"\n:,=\" -09asxz",
        checks::admit,
    );
}

#[test]
fn framing_guard_is_split_invariant_on_random_streams() {
    let corpus: &[&[u8]] = &[
        b"\x03GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x01POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x02POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"\x04PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x05GET / HTTP/1.0\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n",
    ];
    run(
        "framing",
        0x5eed_0004,
        corpus,
        b"\r\n :0123456789abcdef;",
        checks::framing,
    );
}

#[test]
fn jwt_subject_is_only_ever_the_payloads_canonical_sub() {
    let corpus: &[&[u8]] = &[
        b"\x00Bearer eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwic3ViIjoibHB1YSIsImV4cCI6MX0.c2ln",
        b"\x00Bearer h.eyJzdWIiOiJsVXBhIn0=.s",
        b"\x00Bearer  h.eyJzdWIiOiIuLi94In0.s ",
        b"\x00Bearer h.eyJzdWIiOiJhIiwic3ViIjoiYiJ9.s",
        // `["lpua"]`: not a claims set, though serde reads a struct from it.
        b"\x00Bearer h.WyJscHVhIl0.s",
        b"\x00Bearer Cr abc:123",
        b"\x00Basic dXNlcjpwYXNz",
        b"\x01\x04lpuaextra",
        b"\x01\x03a/b{\"sub\":\"x\"}",
        b"\x01\x00",
    ];
    run(
        "jwt_sub",
        0x5eed_0005,
        corpus,
        b".=-_ AZaz09\"{}:,[]",
        checks::jwt_sub,
    );
}

#[test]
fn nocache_past_a_thousand_pairs_is_only_ever_more_careful() {
    // Found by `cargo fuzz run nocache_parse`: the reference first assumed Go gives up at 1000 pairs; Go's
    // limit is 10,000 and past it every parameter is absent. The proxy's own cut-off stays the safe side.
    for query in [
        format!("nocache&{}", "a&".repeat(1500)),
        format!("{}nocache=1", "a&".repeat(1500)),
        format!("nocache=1&{}", "a&".repeat(10_001)),
        format!("{}nocache=1", "a&".repeat(10_001)),
    ] {
        checks::nocache(query.as_bytes());
    }
}
