//! `bpf(2)` calls that aya does not offer for hash maps.

use std::{
    borrow::Borrow,
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::{HashMap, IterableMap, MapData};

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (hash maps since Linux 5.14).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The map-element part of `union bpf_attr`: the kernel reads only the
/// first `size_of::<ElemAttr>()` bytes we pass.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Reads and removes `key` from a hash map in one call (one syscall, and no
/// window where another reader sees the entry we are taking). `None` when
/// the map has no such key. The map is aya's typed handle, which checked
/// at creation that the kernel's key and value sizes are `K`'s and `V`'s
/// (a per-CPU map, whose values are larger, is another type).
pub fn lookup_and_delete<T: Borrow<MapData>, K: aya::Pod, V: aya::Pod>(
    map: &HashMap<T, K, V>,
    key: &K,
) -> io::Result<Option<V>> {
    let mut value = std::mem::MaybeUninit::<V>::zeroed();
    let attr = ElemAttr {
        map_fd: map.map().fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `attr` points at a live key and at room for one `V`, which is
    // the map's value size (aya checked it), so the kernel writes no more
    // than that; it reads no more of `attr` than its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>() as u32,
        )
    };
    if rc == 0 {
        // SAFETY: the kernel filled the value; `V: Pod` is valid for any
        // bytes.
        return Ok(Some(unsafe { value.assume_init() }));
    }
    match io::Error::last_os_error() {
        err if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        err => Err(err),
    }
}
