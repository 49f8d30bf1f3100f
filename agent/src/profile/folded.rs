//! Raw stacks → symbols → folded lines (`thread;outer;…;inner count`, the
//! format of Brendan Gregg's `stackcollapse` scripts, which inferno and
//! most flame graph tools read), with notes on what the stacks miss.
//!
//! Symbols come from blazesym: kernel addresses from `/proc/kallsyms`,
//! user addresses from each process's mapped ELF files, read through
//! `/proc/<pid>/map_files` so that a pod's files are found whatever its
//! mount namespace: first their symbol tables (which give Rust and C++
//! names with their paths, `weft_agent::admin::route`), then, for what
//! those leave unknown (a stripped binary), their DWARF or the separate
//! debug file it links to.

use std::collections::{BTreeMap, HashMap, HashSet};

use blazesym::{
    MaybeDefault, Pid,
    symbolize::{
        Input, Symbolizer,
        source::{Kernel, Process, Source},
    },
};

use super::sampler::Raw;

/// Kernel frames carry this suffix (`stackcollapse-perf --all`), which
/// flame graph tools colour apart.
pub const KERNEL_SUFFIX: &str = "_[k]";
/// A frame no symbol covers.
const UNKNOWN: &str = "[unknown]";
/// User stacks this deep or less are what a frame-pointer-less binary
/// gives: the sampled function, maybe one caller.
const SHALLOW: usize = 2;

/// Folded lines, most samples first, and notes.
#[derive(Debug, Default)]
pub struct Folded {
    pub lines: Vec<String>,
    pub notes: Vec<String>,
}

/// Symbolizes `raw` and folds it.
pub fn fold(raw: &Raw) -> Folded {
    let symbolizer = Symbolizer::builder()
        .enable_code_info(false)
        .enable_inlined_fns(false)
        .build();
    let mut notes = Vec::new();

    let kernel_ips: Vec<u64> = unique(
        raw.counts
            .iter()
            .filter_map(|(k, _)| stack(raw, k.kernel_stack)),
    );
    let kernel_source = Source::Kernel(Kernel {
        // kallsyms only: a vmlinux with DWARF would take seconds to read
        // and adds nothing to a function name.
        vmlinux: MaybeDefault::None,
        ..Kernel::default()
    });
    let kernel = names(&symbolizer, &kernel_source, &kernel_ips).unwrap_or_else(|err| {
        notes.push(format!(
            "kernel symbols could not be read ({err}): kernel frames are addresses"
        ));
        HashMap::new()
    });

    let mut by_process: BTreeMap<u32, Vec<&Vec<u64>>> = BTreeMap::new();
    for (key, _) in &raw.counts {
        if let Some(ips) = stack(raw, key.user_stack) {
            by_process.entry(key.tgid).or_default().push(ips);
        }
    }
    let mut user: HashMap<u32, HashMap<u64, String>> = HashMap::new();
    for (tgid, stacks) in by_process {
        let ips = unique(stacks.into_iter());
        match process_names(&symbolizer, tgid, &ips) {
            Ok(map) => {
                user.insert(tgid, map);
            }
            Err(err) => notes.push(format!(
                "process {tgid} ({}): user frames are unknown, its symbols could not be read: {err} (did it exit before the profile ended?)",
                process_name(raw, tgid)
            )),
        }
    }

    let mut folded: HashMap<String, u64> = HashMap::new();
    // Per process: samples, and samples whose user stack is shallow.
    let mut depth: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let no_names = HashMap::new();
    for (key, count) in &raw.counts {
        let mut frames = vec![sanitize(&comm(&key.comm))];
        if let Some(ips) = stack(raw, key.user_stack) {
            let names = user.get(&key.tgid).unwrap_or(&no_names);
            frames.extend(frames_of(ips, names, ""));
            let entry = depth.entry(key.tgid).or_default();
            entry.0 += count;
            if ips.len() <= SHALLOW {
                entry.1 += count;
            }
        }
        if let Some(ips) = stack(raw, key.kernel_stack) {
            frames.extend(frames_of(ips, &kernel, KERNEL_SUFFIX));
        }
        *folded.entry(frames.join(";")).or_default() += count;
    }
    for (tgid, (samples, shallow)) in depth {
        if samples >= 10 && shallow * 2 > samples {
            notes.push(format!(
                "process {tgid} ({}): {}% of its user stacks are {SHALLOW} frames deep or less; it looks built without frame pointers, so the kernel could unwind little beyond the sampled function: self time is right, callers are missing (rebuild with -C force-frame-pointers=yes for Rust, -fno-omit-frame-pointer for C/C++)",
                process_name(raw, tgid),
                shallow * 100 / samples
            ));
        }
    }
    let mut lines: Vec<(String, u64)> = folded.into_iter().collect();
    lines.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Folded {
        lines: lines
            .into_iter()
            .map(|(stack, n)| format!("{stack} {n}"))
            .collect(),
        notes,
    }
}

/// The stack's instruction pointers, innermost first, if it was recorded.
fn stack(raw: &Raw, id: i32) -> Option<&Vec<u64>> {
    u32::try_from(id)
        .ok()
        .and_then(|id| raw.stacks.get(&id))
        .filter(|ips| !ips.is_empty())
}

/// The address to look up for the frame at `index`: a caller's frame holds
/// a return address, one past its call, which may already be the next
/// function (as perf does, look up the byte before it).
fn lookup_addr(index: usize, ip: u64) -> u64 {
    if index == 0 { ip } else { ip.saturating_sub(1) }
}

fn unique<'a>(stacks: impl Iterator<Item = impl IntoIterator<Item = &'a u64>>) -> Vec<u64> {
    let mut seen = HashSet::new();
    for ips in stacks {
        for (i, ip) in ips.into_iter().enumerate() {
            seen.insert(lookup_addr(i, *ip));
        }
    }
    seen.into_iter().collect()
}

/// Address → function name, for the addresses that have one.
fn names(
    symbolizer: &Symbolizer,
    source: &Source,
    addrs: &[u64],
) -> Result<HashMap<u64, String>, blazesym::Error> {
    if addrs.is_empty() {
        return Ok(HashMap::new());
    }
    let symbols = symbolizer.symbolize(source, Input::AbsAddr(addrs))?;
    Ok(addrs
        .iter()
        .zip(symbols)
        .filter_map(|(addr, sym)| Some((*addr, sanitize(&sym.into_sym()?.name))))
        .collect())
}

/// A process's addresses → names: ELF symbol tables first, then DWARF
/// (and debug links) for the addresses they leave unknown.
fn process_names(
    symbolizer: &Symbolizer,
    tgid: u32,
    addrs: &[u64],
) -> Result<HashMap<u64, String>, blazesym::Error> {
    let mut elf = Process::new(Pid::from(tgid));
    elf.debug_syms = false;
    let mut found = names(symbolizer, &Source::Process(elf), addrs)?;
    let missing: Vec<u64> = addrs
        .iter()
        .copied()
        .filter(|a| !found.contains_key(a))
        .collect();
    if !missing.is_empty() {
        let dwarf = Source::Process(Process::new(Pid::from(tgid)));
        if let Ok(more) = names(symbolizer, &dwarf, &missing) {
            found.extend(more);
        }
    }
    Ok(found)
}

/// Outermost first, as folded stacks read.
fn frames_of(ips: &[u64], names: &HashMap<u64, String>, suffix: &str) -> Vec<String> {
    let mut frames: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let name = names
                .get(&lookup_addr(i, *ip))
                .map_or(UNKNOWN, String::as_str);
            format!("{name}{suffix}")
        })
        .collect();
    frames.reverse();
    frames
}

/// `;` separates frames and a line ends with ` count`: neither may be
/// ambiguous inside a name.
fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

fn comm(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    match String::from_utf8_lossy(&bytes[..end]).trim() {
        "" => "[unnamed]".to_string(),
        name => name.to_string(),
    }
}

/// The process's name (its main thread's), else a sampled thread's.
fn process_name(raw: &Raw, tgid: u32) -> String {
    if let Ok(name) = std::fs::read_to_string(format!("/proc/{tgid}/comm")) {
        return name.trim().to_string();
    }
    raw.counts
        .iter()
        .find(|(k, _)| k.tgid == tgid)
        .map_or_else(String::new, |(k, _)| comm(&k.comm))
}

#[cfg(test)]
mod tests {
    use weft_ebpf_common::SampleKey;

    use super::*;

    fn key(tgid: u32, user: i32, kernel: i32, name: &str) -> SampleKey {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        SampleKey {
            tgid,
            user_stack: user,
            kernel_stack: kernel,
            _pad: 0,
            comm,
        }
    }

    #[test]
    fn frames_read_outermost_first_with_kernel_frames_marked() {
        let names: HashMap<u64, String> = [(0x10, "leaf".to_string()), (0x1f, "caller".into())]
            .into_iter()
            .collect();
        // The caller's frame holds a return address: 0x20 looks up 0x1f.
        assert_eq!(
            frames_of(&[0x10, 0x20, 0x30], &names, KERNEL_SUFFIX),
            ["[unknown]_[k]", "caller_[k]", "leaf_[k]"]
        );
        assert_eq!(comm(b"burn\0\0\0\0\0\0\0\0\0\0\0\0"), "burn");
        assert_eq!(sanitize("a;b\nc"), "a:b c");
    }

    #[test]
    fn notes_shallow_user_stacks_of_a_process() {
        // Symbols of a process that does not exist cannot be read: the
        // frames stay unknown and a note says why.
        let gone = u32::MAX - 1;
        let raw = Raw {
            counts: vec![
                (key(gone, 1, -1, "spin"), 40),
                (key(gone, 2, -1, "spin"), 2),
            ],
            stacks: [(1, vec![0x1000]), (2, vec![0x1000, 0x2000, 0x3000])]
                .into_iter()
                .collect(),
            lost: 0,
            program: None,
        };
        let folded = fold(&raw);
        assert_eq!(
            folded.lines,
            ["spin;[unknown] 40", "spin;[unknown];[unknown];[unknown] 2"]
        );
        assert!(
            folded
                .notes
                .iter()
                .any(|n| n.contains("without frame pointers") && n.contains("95%")),
            "{:?}",
            folded.notes
        );
        assert!(
            folded.notes.iter().any(|n| n.contains("could not be read")),
            "{:?}",
            folded.notes
        );
    }
}
