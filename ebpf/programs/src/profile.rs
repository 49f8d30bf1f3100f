//! `weft_profile` (`perf_event`): on-demand CPU profiling.
//!
//! The agent loads this object for one profile, sets the filter globals,
//! attaches the program to a software `cpu-clock` event on every online CPU
//! at the requested frequency, and detaches it when the profile ends. Each
//! sample of a task that passes the filter records its user and kernel
//! stacks in `WEFT_PROF_STACKS` and counts one under (process, thread
//! name, user stack, kernel stack) in `WEFT_PROF_COUNTS` (per CPU). A sample that
//! does not fit either map is counted in `WEFT_PROF_LOST` instead.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
        helpers::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        },
        macros::{map, perf_event},
        maps::{PerCpuArray, PerCpuHashMap, StackTrace},
        programs::{PerfEventContext, tracing::StackIdContext},
    };
    use weft_ebpf_common::{
        PROFILE_ALL, PROFILE_CGROUP, PROFILE_LOST_COUNT, PROFILE_LOST_STACK, PROFILE_TGID,
        SampleKey,
    };

    /// What is sampled: `PROFILE_ALL`, `PROFILE_CGROUP` or `PROFILE_TGID`.
    /// Set by the loader (read-only data), never changed while attached.
    #[unsafe(no_mangle)]
    static PROFILE_FILTER: u32 = PROFILE_ALL;
    /// With `PROFILE_CGROUP`: the pod's cgroup id and its level (the
    /// cgroup2 root is level 0).
    #[unsafe(no_mangle)]
    static PROFILE_CGROUP_ID: u64 = 0;
    #[unsafe(no_mangle)]
    static PROFILE_CGROUP_LEVEL: u32 = 0;
    /// With `PROFILE_TGID`: the process.
    #[unsafe(no_mangle)]
    static PROFILE_TGID_VALUE: u32 = 0;

    /// The loader may lower these (`map_max_entries`); these are the caps.
    #[map]
    static WEFT_PROF_STACKS: StackTrace = StackTrace::with_max_entries(8_192, 0);

    /// Per CPU, so that a count is only ever written by the CPU it
    /// belongs to (no atomics needed; the agent adds the CPUs up).
    #[map]
    static WEFT_PROF_COUNTS: PerCpuHashMap<SampleKey, u64> =
        PerCpuHashMap::with_max_entries(8_192, 0);

    #[map]
    static WEFT_PROF_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

    #[perf_event]
    pub fn weft_profile(ctx: PerfEventContext) -> u32 {
        // Nothing to tell the kernel either way: a sample that cannot be
        // recorded is counted as lost.
        let _ = try_sample(&ctx);
        0
    }

    fn global_u32(value: &u32) -> u32 {
        // SAFETY: a plain read of a static; volatile so that the value the
        // loader wrote into the object is read, not the compile-time one.
        unsafe { core::ptr::read_volatile(value) }
    }

    fn wanted(tgid: u32) -> bool {
        if tgid == 0 {
            // The idle task: a CPU with nothing to do.
            return false;
        }
        match global_u32(&PROFILE_FILTER) {
            PROFILE_CGROUP => {
                // SAFETY: as in `global_u32`.
                let id = unsafe { core::ptr::read_volatile(&PROFILE_CGROUP_ID) };
                let level = global_u32(&PROFILE_CGROUP_LEVEL) as i32;
                // SAFETY: a helper call with a plain integer argument.
                unsafe { bpf_get_current_ancestor_cgroup_id(level) == id }
            }
            PROFILE_TGID => tgid == global_u32(&PROFILE_TGID_VALUE),
            _ => true,
        }
    }

    fn lost(index: u32) {
        if let Some(counter) = WEFT_PROF_LOST.get_ptr_mut(index) {
            // SAFETY: a per-CPU slot, written only by this CPU.
            unsafe { *counter += 1 };
        }
    }

    fn try_sample(ctx: &PerfEventContext) -> Result<(), i32> {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if !wanted(tgid) {
            return Ok(());
        }
        // A failure is either "no such stack" (no kernel stack for a
        // sample in user mode, no user stack for a kernel thread: -EFAULT)
        // or a full or colliding bucket (-EEXIST, -ENOMEM): only the
        // second loses information.
        let stack_id = |flags: u64| match ctx.get_stackid(&WEFT_PROF_STACKS, flags) {
            Ok(id) => id as i32,
            Err(err) => {
                if err == -17 || err == -12 {
                    lost(PROFILE_LOST_STACK);
                }
                -1
            }
        };
        let key = SampleKey {
            tgid,
            user_stack: stack_id(u64::from(BPF_F_USER_STACK)),
            kernel_stack: stack_id(0),
            _pad: 0,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
        if let Some(count) = WEFT_PROF_COUNTS.get_ptr_mut(&key) {
            // SAFETY: this CPU's slot of a live entry; only this CPU writes
            // it, and a perf_event program does not nest on one CPU.
            unsafe { *count += 1 };
            return Ok(());
        }
        match WEFT_PROF_COUNTS.insert(&key, &1, u64::from(BPF_NOEXIST)) {
            Ok(()) => Ok(()),
            Err(_) => match WEFT_PROF_COUNTS.get_ptr_mut(&key) {
                // Another CPU inserted it meanwhile.
                Some(count) => {
                    // SAFETY: as above.
                    unsafe { *count += 1 };
                    Ok(())
                }
                None => {
                    lost(PROFILE_LOST_COUNT);
                    Ok(())
                }
            },
        }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Built for the host (e.g. by `cargo clippy --workspace`), the crate is
/// empty: the program only exists for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
