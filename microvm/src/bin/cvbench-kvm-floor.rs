//! `cvbench-kvm-floor`: what KVM itself charges for a VM start on this host, as one process.
//!
//! It opens `/dev/kvm`, creates a VM with one 2 MiB memory region and one vCPU, puts the vCPU in
//! 64-bit mode (one identity-mapped huge page) at two instructions — `mov al, 42; out 0x10, al` —
//! runs it to the I/O exit, checks port and byte, and exits 0. Nothing else: no ELF, no jail, no
//! CPUID/MSR/FPU set-up, no threads, no signal handling. Exec'd by the `floor/kvm` bench, it is
//! the floor under `cvbench-vmm bare` (exec + dynamic loading + the KVM ioctls a VM cannot do
//! without + one guest entry and exit + teardown at exit).
//!
//! Exit status: 0 when the guest's `out` arrived as expected, 1 otherwise (the message says what
//! came instead).

use std::process::ExitCode;

use anyhow::{bail, Context};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};

const MEM_SIZE: usize = 2 << 20;
const PML4: usize = 0x1000;
const PDPT: usize = 0x2000;
const PD: usize = 0x3000;
const CODE: usize = 0x4000;
/// `mov al, 42; out 0x10, al; hlt` (the `hlt` only runs if the exit were resumed).
const GUEST_CODE: [u8; 5] = [0xb0, 42, 0xe6, 0x10, 0xf4];
const PORT: u16 = 0x10;

/// An anonymous private mapping, unmapped on drop (after the VM fd is gone, at process exit).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> anyhow::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of guest memory");
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    fn write(&mut self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.len, "guest write out of range");
        // SAFETY: the range lies inside the mapping (checked above), which is writable and
        // owned by this value; the source is a distinct slice.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is the mapping this value created and nothing else refers to.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A flat 64-bit segment (L=1), code or data, at privilege 0.
fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        ..Default::default()
    }
}

fn run() -> anyhow::Result<()> {
    // Declared first, so dropped last: the memory outlives the VM that maps it.
    let mut mem = Mapping::new(MEM_SIZE)?;
    let kvm = Kvm::new().context("open /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;

    // Page tables: PML4[0] -> PDPT[0] -> PD[0] = one 2 MiB page at 0 (present, writable, user:
    // kvm_pvm runs CPL0 code only from user-accessible pages).
    const P_RW_U: u64 = 0x7;
    mem.write(PML4, &(PDPT as u64 | P_RW_U).to_le_bytes());
    mem.write(PDPT, &(PD as u64 | P_RW_U).to_le_bytes());
    mem.write(PD, &(P_RW_U | 0x80).to_le_bytes());
    mem.write(CODE, &GUEST_CODE);
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem.ptr as u64,
    };
    // SAFETY: the region is a live mapping of MEM_SIZE bytes that outlives the VM (`mem` is
    // declared before `vm` and `vcpu`, so dropped after them).
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;

    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    let mut sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    sregs.cs = segment(0x8, true);
    let data = segment(0x10, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr3 = PML4 as u64;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 1 | (1 << 4) | (1 << 5) | (1 << 31); // PE, ET, NE, PG
    sregs.efer = (1 << 8) | (1 << 10); // LME, LMA
    vcpu.set_sregs(&sregs).context("KVM_SET_SREGS")?;
    // IOPL 3 so the `out` needs no TSS I/O bitmap under any KVM (kvm_pvm checks it at CPL0).
    let regs = kvm_regs { rip: CODE as u64, rflags: 0x2 | (3 << 12), rsp: MEM_SIZE as u64, ..Default::default() };
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;

    match vcpu.run().context("KVM_RUN")? {
        VcpuExit::IoOut(PORT, [42]) => Ok(()),
        other => bail!("expected the guest's `out {PORT:#x}` of 42, got {other:?}"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvbench-kvm-floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}
