use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn hash_of(key: &HashKey, h: &HeaderMap, pq: &str) -> Option<u64> {
    let (hash, cookie) = request_hash(key, h, pq, IP, 0);
    assert!(cookie.is_none());
    hash
}

#[test]
fn header_key() {
    let key = HashKey::Header(HeaderName::from_static("x-user"));
    let none = HeaderMap::new();
    assert_eq!(hash_of(&key, &none, "/"), None);
    let a = hash_of(&key, &headers(&[("x-user", "alice")]), "/");
    let b = hash_of(&key, &headers(&[("x-user", "bob")]), "/other");
    assert!(a.is_some() && b.is_some() && a != b);
    assert_eq!(
        a,
        hash_of(
            &key,
            &headers(&[("x-user", "alice"), ("x-other", "1")]),
            "/x"
        )
    );
    // Several values: their order does not matter.
    let ab = hash_of(&key, &headers(&[("x-user", "a"), ("x-user", "b")]), "/");
    let ba = hash_of(&key, &headers(&[("x-user", "b"), ("x-user", "a")]), "/");
    assert_eq!(ab, ba);
    assert_ne!(ab, hash_of(&key, &headers(&[("x-user", "a")]), "/"));
}

#[test]
fn cookie_key_reads_the_cookie() {
    let key = HashKey::Cookie {
        name: "session".into(),
        path: "/".into(),
        ttl: Some(secs(60)),
    };
    let plain = hash_of(&key, &headers(&[("cookie", "a=1; session=abc; b=2")]), "/");
    let quoted = hash_of(
        &key,
        &headers(&[("cookie", "a=1"), ("cookie", "session=\"abc\"")]),
        "/",
    );
    assert!(plain.is_some());
    assert_eq!(plain, quoted);
    assert_ne!(
        plain,
        hash_of(&key, &headers(&[("cookie", "session=abd")]), "/")
    );
    // A cookie whose name only ends like it does not count.
    let (_, set) = request_hash(&key, &headers(&[("cookie", "xsession=abc")]), "/", IP, 1);
    assert!(set.is_some());
}

#[test]
fn cookie_key_generates_a_cookie_with_a_ttl() {
    let key = HashKey::Cookie {
        name: "session".into(),
        path: "/app".into(),
        ttl: Some(secs(3600)),
    };
    let (hash, set) = request_hash(&key, &HeaderMap::new(), "/app/x", IP, 42);
    let set = set.expect("a generated cookie");
    assert_eq!(set.value.len(), 16);
    assert_eq!(
        set.header.to_str().unwrap(),
        format!("session={}; Max-Age=3600; Path=/app; HttpOnly", set.value)
    );
    // The next request carries it and hashes the same.
    let next = headers(&[("cookie", &format!("session={}", set.value))]);
    assert_eq!(hash, hash_of(&key, &next, "/app/y"));
    // Another roll, another client: another value.
    let (other, set2) = request_hash(&key, &HeaderMap::new(), "/", IP, 43);
    assert_ne!(set2.map(|s| s.value), Some(set.value));
    assert_ne!(other, hash);
}

#[test]
fn cookie_key_session_cookie_and_none() {
    let session = HashKey::Cookie {
        name: "s".into(),
        path: String::new(),
        ttl: Some(Duration::ZERO),
    };
    let (hash, set) = request_hash(&session, &HeaderMap::new(), "/", IP, 1);
    let set = set.expect("a session cookie");
    assert!(hash.is_some());
    assert_eq!(
        set.header.to_str().unwrap(),
        format!("s={}; HttpOnly", set.value)
    );

    let no_ttl = HashKey::Cookie {
        name: "s".into(),
        path: "/".into(),
        ttl: None,
    };
    assert_eq!(
        request_hash(&no_ttl, &HeaderMap::new(), "/", IP, 1),
        (None, None)
    );
}

#[test]
fn source_ip_key() {
    let h = HeaderMap::new();
    let a = request_hash(&HashKey::SourceIp, &h, "/", IP, 1).0;
    let b = request_hash(&HashKey::SourceIp, &h, "/x", IP, 2).0;
    let v6 = request_hash(
        &HashKey::SourceIp,
        &h,
        "/",
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        1,
    )
    .0;
    assert!(a.is_some());
    assert_eq!(a, b, "neither path nor roll matters");
    assert_ne!(a, v6);
}

#[test]
fn query_parameter_key() {
    let key = HashKey::QueryParameter("user".into());
    let h = HeaderMap::new();
    let alice = hash_of(&key, &h, "/p?user=alice");
    assert!(alice.is_some());
    assert_eq!(alice, hash_of(&key, &h, "/q?x=1&user=alice&user=bob#frag"));
    assert_eq!(alice, hash_of(&key, &h, "/q?user=alice#user=bob"));
    assert_ne!(alice, hash_of(&key, &h, "/p?user=bob"));
    assert_eq!(hash_of(&key, &h, "/p"), None);
    assert_eq!(hash_of(&key, &h, "/p?username=alice"), None);
    assert_eq!(hash_of(&key, &h, "/p?user"), hash_of(&key, &h, "/p?user="));
}

fn hashed(algorithm: HashAlgorithm) -> Cluster {
    cluster(LbPolicy::ConsistentHash {
        key: HashKey::SourceIp,
        algorithm,
    })
}

fn algorithms() -> [HashAlgorithm; 2] {
    [
        HashAlgorithm::RingHash {
            minimum_ring_size: DEFAULT_MINIMUM_RING_SIZE,
        },
        HashAlgorithm::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        },
    ]
}

/// Where each of `n` keys goes.
fn map_keys(c: &Cluster, e: &[Endpoint], n: u64) -> Vec<SocketAddr> {
    let now = Instant::now();
    (0..n)
        .map(|k| pick_addr(c, e, Some(key(k)), k, now))
        .collect()
}

#[test]
fn same_key_same_endpoint_everywhere() {
    for alg in algorithms() {
        let e = eps(5);
        let first = map_keys(&hashed(alg.clone()), &e, 500);
        // Again, on another cluster (another node), with another roll and
        // the list in another order.
        let other = hashed(alg.clone());
        let mut reversed = e.clone();
        reversed.reverse();
        let now = Instant::now();
        for (k, want) in first.iter().enumerate() {
            let k = k as u64;
            assert_eq!(
                pick_addr(&other, &reversed, Some(key(k)), k + 99, now),
                *want,
                "{alg:?}"
            );
        }
    }
}

#[test]
fn later_attempts_move_off_the_hashed_endpoint() {
    // Envoy's host selection retries under `previous_hosts`: attempt 0 is
    // the hash's own endpoint, and within a few attempts another one
    // comes up (for almost every key), the same on every node.
    for alg in algorithms() {
        let e = eps(5);
        let c = hashed(alg.clone());
        let other = hashed(alg.clone());
        let now = Instant::now();
        let mut moved = 0;
        for k in 0..200 {
            let at = |c: &Cluster, attempt| {
                c.pick_attempt(&e, Some(key(k)), attempt, k, now)
                    .expect("an endpoint")
                    .endpoint
                    .addr
            };
            let first = at(&c, 0);
            assert_eq!(first, pick_addr(&c, &e, Some(key(k)), k, now), "{alg:?}");
            if (1..5).any(|n| at(&c, n) != first) {
                moved += 1;
            }
            for n in 0..5 {
                assert_eq!(at(&c, n), at(&other, n), "{alg:?}: key {k}, attempt {n}");
            }
        }
        assert!(
            moved >= 195,
            "{alg:?}: only {moved} of 200 keys reached another endpoint"
        );
    }
}

#[test]
fn keys_spread_evenly() {
    for alg in algorithms() {
        let e = eps(5);
        let mut per: HashMap<SocketAddr, usize> = HashMap::new();
        for a in map_keys(&hashed(alg.clone()), &e, 10_000) {
            *per.entry(a).or_default() += 1;
        }
        assert_eq!(per.len(), 5);
        for (a, n) in &per {
            assert!((1600..=2400).contains(n), "{alg:?}: {a} has {n} of 10000");
        }
    }
}

#[test]
fn keys_spread_by_weight() {
    for alg in algorithms() {
        let e = [weighted(1, 1), weighted(2, 3)];
        let light = map_keys(&hashed(alg.clone()), &e, 10_000)
            .iter()
            .filter(|a| **a == e[0].addr)
            .count();
        assert!((2000..=3000).contains(&light), "{alg:?}: {light} of 10000");
    }
}

#[test]
fn removing_an_endpoint_moves_only_its_keys() {
    for alg in algorithms() {
        let e = eps(5);
        let c = hashed(alg.clone());
        let before = map_keys(&c, &e, 10_000);
        let gone = e[2].addr;
        let rest: Vec<Endpoint> = e.iter().filter(|e| e.addr != gone).cloned().collect();
        let after = map_keys(&c, &rest, 10_000);
        let others = before.iter().filter(|a| **a != gone).count();
        let stayed = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != gone && b == a)
            .count();
        assert!(after.iter().all(|a| *a != gone));
        match alg {
            HashAlgorithm::RingHash { .. } => assert_eq!(stayed, others, "ring: exactly"),
            HashAlgorithm::Maglev { .. } => {
                assert!(
                    stayed * 10 >= others * 9,
                    "maglev: {stayed} of {others} stayed"
                )
            }
        }
        // And back: the original mapping returns.
        assert_eq!(map_keys(&c, &e, 10_000), before, "{alg:?}");
    }
}

#[test]
fn small_and_odd_tables() {
    let now = Instant::now();
    for alg in [
        HashAlgorithm::RingHash {
            minimum_ring_size: 1,
        },
        HashAlgorithm::Maglev { table_size: 7 },
        HashAlgorithm::Maglev { table_size: 2 },
    ] {
        let c = hashed(alg.clone());
        let e = eps(3);
        let got: std::collections::HashSet<_> = (0..200)
            .map(|k| pick_addr(&c, &e, Some(key(k)), 0, now))
            .collect();
        assert!(!got.is_empty(), "{alg:?}");
        assert_eq!(pick_addr(&c, &eps(1), Some(1), 0, now), ep(1).addr);
    }
}

#[test]
fn no_hash_picks_at_random() {
    for alg in algorithms() {
        let c = hashed(alg);
        let e = eps(4);
        let now = Instant::now();
        let got: std::collections::HashSet<_> =
            (0..100).map(|r| pick_addr(&c, &e, None, r, now)).collect();
        assert_eq!(got.len(), 4);
    }
}

#[test]
fn source_ip_key_hashes_the_addresss_text() {
    let text = |ip: IpAddr| xxhash_rust::xxh64::xxh64(ip.to_string().as_bytes(), 0);
    assert_eq!(
        hash_of(&HashKey::SourceIp, &HeaderMap::new(), "/"),
        Some(text(IP))
    );
    let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
        .parse()
        .unwrap();
    for ip in [longest, IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let (hash, _) = request_hash(&HashKey::SourceIp, &HeaderMap::new(), "/", ip, 0);
        assert_eq!(hash, Some(text(ip)), "{ip}");
    }
}
