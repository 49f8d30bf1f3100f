//! A small pcap reader and writer, and a parser from link-layer frames to
//! TCP segments (IPv4 and IPv6 over Ethernet, Linux cooked or raw IP).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// One captured link-layer frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    /// The frame's bytes.
    pub data: Vec<u8>,
}

/// Writes frames as a classic pcap file (microsecond timestamps).
pub fn write_pcap(path: &Path, linktype: u32, frames: &[Frame]) -> Result<()> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.data.len()).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    for f in frames {
        out.extend_from_slice(&(f.ts.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&f.ts.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Reads a classic pcap file (either byte order, micro- or nanosecond
/// timestamps); returns its link type and frames.
pub fn read_pcap(path: &Path) -> Result<(u32, Vec<Frame>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_pcap(&bytes).with_context(|| format!("parsing pcap file {}", path.display()))
}

/// Parses the bytes of a classic pcap file.
pub fn parse_pcap(bytes: &[u8]) -> Result<(u32, Vec<Frame>)> {
    if bytes.len() < 24 {
        bail!("shorter than a pcap header ({} bytes)", bytes.len());
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let (big_endian, nanos) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        _ => bail!("bad magic {magic:#010x} (pcapng is not supported; write with `tcpdump -w`)"),
    };
    let u32_at = |off: usize| -> u32 {
        let b: [u8; 4] = bytes[off..off + 4].try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let linktype = u32_at(20);
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let secs = u32_at(off) as u64;
        let frac = u32_at(off + 4);
        let caplen = u32_at(off + 8) as usize;
        off += 16;
        if off + caplen > bytes.len() {
            bail!("truncated record at offset {off}");
        }
        let ts = Duration::from_secs(secs)
            + if nanos {
                Duration::from_nanos(frac as u64)
            } else {
                Duration::from_micros(frac as u64)
            };
        frames.push(Frame {
            ts,
            data: bytes[off..off + caplen].to_vec(),
        });
        off += caplen;
    }
    Ok((linktype, frames))
}

/// A TCP segment seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket {
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// The segment's payload.
    pub payload: Vec<u8>,
}

// === impl TcpPacket ===

impl TcpPacket {
    /// If the payload starts with a TLS record header: its content type
    /// (0x16 handshake, 0x17 application data, …) and record version
    /// (0x0303, or 0x0301 on a first ClientHello).
    pub fn tls_record(&self) -> Option<(u8, u16)> {
        match self.payload.as_slice() {
            [ct @ 0x14..=0x18, 0x03, minor @ 0x01..=0x04, ..] => {
                Some((*ct, u16::from_be_bytes([0x03, *minor])))
            }
            _ => None,
        }
    }

    /// Whether `needle` occurs in this segment's payload.
    pub fn payload_contains(&self, needle: &[u8]) -> bool {
        contains(&self.payload, needle)
    }
}

/// Parses one frame of link type `linktype` into a TCP segment; `None` for
/// anything that is not TCP over IPv4/IPv6 (ARP, UDP, …).
pub fn parse_frame(linktype: u32, frame: &Frame) -> Option<TcpPacket> {
    let data = frame.data.as_slice();
    let (ethertype, ip) = match linktype {
        LINKTYPE_ETHERNET => {
            let mut ethertype = u16::from_be_bytes([*data.get(12)?, *data.get(13)?]);
            let mut off = 14;
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                ethertype = u16::from_be_bytes([*data.get(off + 2)?, *data.get(off + 3)?]);
                off += 4;
            }
            (ethertype, data.get(off..)?)
        }
        LINKTYPE_LINUX_SLL => (
            u16::from_be_bytes([*data.get(14)?, *data.get(15)?]),
            data.get(16..)?,
        ),
        LINKTYPE_LINUX_SLL2 => (
            u16::from_be_bytes([*data.first()?, *data.get(1)?]),
            data.get(20..)?,
        ),
        LINKTYPE_RAW | LINKTYPE_IPV4 => match data.first()? >> 4 {
            4 => (0x0800, data),
            6 => (0x86dd, data),
            _ => return None,
        },
        _ => return None,
    };
    let (src_ip, dst_ip, tcp): (IpAddr, IpAddr, &[u8]) = match ethertype {
        0x0800 => {
            let ihl = (*ip.first()? & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize;
            if *ip.get(9)? != 6 || ihl < 20 {
                return None;
            }
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if frag != 0 {
                return None;
            }
            let src = Ipv4Addr::new(*ip.get(12)?, ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(*ip.get(16)?, ip[17], ip[18], *ip.get(19)?);
            // GSO frames captured before segmentation carry total length 0.
            let end = if total == 0 {
                ip.len()
            } else {
                total.min(ip.len())
            };
            (src.into(), dst.into(), ip.get(ihl..end)?)
        }
        0x86dd => {
            if *ip.get(6)? != 6 {
                return None;
            }
            let plen = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize;
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let end = if plen == 0 {
                ip.len()
            } else {
                (40 + plen).min(ip.len())
            };
            (
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                ip.get(40..end)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]);
    let dport = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let data_off = (*tcp.get(12)? >> 4) as usize * 4;
    let flags = *tcp.get(13)?;
    Some(TcpPacket {
        ts: frame.ts,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        seq,
        flags,
        payload: tcp.get(data_off..)?.to_vec(),
    })
}

/// The TCP segments of a capture, with the checks tests make on them.
#[derive(Debug, Clone, Default)]
pub struct Packets {
    /// Every TCP segment, in capture order.
    pub tcp: Vec<TcpPacket>,
    /// Frames that were not TCP (ARP, UDP, ICMP, …).
    pub other_frames: usize,
}

// === impl Packets ===

impl Packets {
    /// Parses frames of link type `linktype`.
    pub fn from_frames(linktype: u32, frames: &[Frame]) -> Packets {
        let mut packets = Packets::default();
        for frame in frames {
            match parse_frame(linktype, frame) {
                Some(p) => packets.tcp.push(p),
                None => packets.other_frames += 1,
            }
        }
        packets
    }

    /// Reads and parses a pcap file (e.g. one written by `tcpdump -w`).
    pub fn read_pcap(path: &Path) -> Result<Packets> {
        let (linktype, frames) = read_pcap(path)?;
        Ok(Packets::from_frames(linktype, &frames))
    }

    /// Segments with a payload.
    pub fn with_payload(&self) -> impl Iterator<Item = &TcpPacket> {
        self.tcp.iter().filter(|p| !p.payload.is_empty())
    }

    /// Segments with a payload sent to destination port `port`.
    pub fn to_port(&self, port: u16) -> impl Iterator<Item = &TcpPacket> {
        self.with_payload().filter(move |p| p.dst.port() == port)
    }

    /// Segments whose payload starts with a TLS record, sent to `port`.
    pub fn tls_records_to(&self, port: u16) -> impl Iterator<Item = &TcpPacket> {
        self.to_port(port).filter(|p| p.tls_record().is_some())
    }

    /// Each direction of each connection, its payload reassembled in
    /// sequence order (retransmitted bytes counted once).
    pub fn streams(&self) -> BTreeMap<(SocketAddr, SocketAddr), Vec<u8>> {
        let mut segments: BTreeMap<(SocketAddr, SocketAddr), Vec<&TcpPacket>> = BTreeMap::new();
        for p in self.with_payload() {
            segments.entry((p.src, p.dst)).or_default().push(p);
        }
        segments
            .into_iter()
            .map(|(key, mut segs)| {
                let base = segs[0].seq;
                segs.sort_by_key(|p| p.seq.wrapping_sub(base));
                let mut stream = Vec::new();
                let mut next = 0u32;
                for p in segs {
                    let start = p.seq.wrapping_sub(base);
                    let end = start.wrapping_add(p.payload.len() as u32);
                    if end <= next {
                        continue;
                    }
                    let skip = next.saturating_sub(start) as usize;
                    stream.extend_from_slice(&p.payload[skip..]);
                    next = end;
                }
                (key, stream)
            })
            .collect()
    }

    /// Whether `needle` appears anywhere on the wire: in one segment, or
    /// across segments of a reassembled stream.
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.with_payload().any(|p| p.payload_contains(needle))
            || self.streams().values().any(|s| contains(s, needle))
    }

    /// A one-line-per-segment summary, for assertion messages.
    pub fn summary(&self, max_lines: usize) -> String {
        let mut lines: Vec<String> = self
            .tcp
            .iter()
            .take(max_lines)
            .map(|p| {
                let head: String = p
                    .payload
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!(
                    "{} -> {} flags={:#04x} len={} {head}",
                    p.src,
                    p.dst,
                    p.flags,
                    p.payload.len()
                )
            })
            .collect();
        if self.tcp.len() > max_lines {
            lines.push(format!("… and {} more", self.tcp.len() - max_lines));
        }
        lines.join("\n")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/TCP frame.
    pub(crate) fn tcp_frame(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        seq: u32,
        payload: &[u8],
    ) -> Frame {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        Frame {
            ts: Duration::from_micros(1_700_000_000_123_456),
            data: f,
        }
    }

    #[test]
    fn pcap_round_trip_and_tcp_parse() {
        let frames = vec![
            tcp_frame(
                [10, 1, 1, 2],
                40000,
                [10, 1, 2, 2],
                15008,
                1,
                &[0x16, 0x03, 0x01, 0, 5],
            ),
            tcp_frame(
                [10, 1, 2, 2],
                15008,
                [10, 1, 1, 2],
                40000,
                9,
                &[0x17, 0x03, 0x03, 0, 1],
            ),
            Frame {
                ts: Duration::ZERO,
                data: vec![0; 12].into_iter().chain([0x08, 0x06, 0, 1]).collect(),
            },
        ];
        let path =
            std::env::temp_dir().join(format!("weft-sim-pcap-test-{}.pcap", std::process::id()));
        write_pcap(&path, LINKTYPE_ETHERNET, &frames).unwrap();
        let packets = Packets::read_pcap(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(packets.tcp.len(), 2);
        assert_eq!(packets.other_frames, 1);
        let first = &packets.tcp[0];
        assert_eq!(first.src, "10.1.1.2:40000".parse().unwrap());
        assert_eq!(first.dst, "10.1.2.2:15008".parse().unwrap());
        assert_eq!(first.ts, frames[0].ts);
        assert_eq!(first.tls_record(), Some((0x16, 0x0301)));
        assert_eq!(packets.tcp[1].tls_record(), Some((0x17, 0x0303)));
        assert_eq!(packets.tls_records_to(15008).count(), 1);
    }

    #[test]
    fn markers_split_across_segments_are_found() {
        let a = [10, 0, 0, 1];
        let b = [10, 0, 0, 2];
        let packets = Packets::from_frames(
            LINKTYPE_ETHERNET,
            &[
                tcp_frame(a, 1, b, 80, 100, b"GET /?m=SEC"),
                tcp_frame(a, 1, b, 80, 100, b"GET /?m=SEC"), // retransmission
                tcp_frame(a, 1, b, 80, 111, b"RET-42 HTTP/1.1"),
            ],
        );
        assert!(
            !packets
                .with_payload()
                .any(|p| p.payload_contains(b"SECRET-42"))
        );
        assert!(packets.contains(b"SECRET-42"));
        assert!(!packets.contains(b"NOT-THERE"));
        let streams = packets.streams();
        assert_eq!(
            streams.values().next().unwrap(),
            b"GET /?m=SECRET-42 HTTP/1.1"
        );
    }

    #[test]
    fn plaintext_is_not_tls() {
        let p = parse_frame(
            LINKTYPE_ETHERNET,
            &tcp_frame([1, 1, 1, 1], 1, [2, 2, 2, 2], 2, 0, b"GET /"),
        )
        .unwrap();
        assert_eq!(p.tls_record(), None);
    }
}
