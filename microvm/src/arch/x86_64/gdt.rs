//! GDT descriptors: one encoder ([`gdt_entry`]) for code, data and TSS descriptors and one
//! decoder ([`segment`]) giving the hidden segment state KVM loads for a selector.

use kvm_bindings::kvm_segment;

/// Flags of a flat 64-bit kernel code segment (G, L, present, DPL0, exec/read, accessed).
pub const KERNEL_CODE64: u16 = 0xa09b;
/// Flat 32-bit kernel code (G, D/B, present, DPL0, exec/read, accessed).
pub const KERNEL_CODE32: u16 = 0xc09b;
/// Flat kernel data (G, D/B, present, DPL0, read/write, accessed).
pub const KERNEL_DATA: u16 = 0xc093;
/// Flat user data (DPL3).
pub const USER_DATA: u16 = 0xc0f3;
/// Flat 64-bit user code (DPL3, L).
pub const USER_CODE64: u16 = 0xa0fb;
/// An available/busy TSS: present, type 0xb (busy), no granularity.
pub const TSS_BUSY: u16 = 0x008b;

/// A descriptor from `flags` (the `0xF0FF` mask: G, D/B, L, AVL and the access byte), base
/// and 20-bit limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// A flat (base 0, limit 4 GiB) code or data descriptor.
pub fn flat(flags: u16) -> u64 {
    gdt_entry(flags, 0, 0xf_ffff)
}

/// A 64-bit TSS descriptor (two GDT slots) for a TSS at `base` of `limit` + 1 bytes.
pub fn tss64(base: u64, limit: u32) -> [u64; 2] {
    [gdt_entry(TSS_BUSY, base as u32, limit), base >> 32]
}

/// The KVM segment (hidden part included) that selector `index` (RPL = the descriptor's DPL)
/// loads from `entry`.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry >> 32) & 0x000f_0000) | (entry & 0xffff);
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    let dpl = ((entry >> 45) & 3) as u8;
    kvm_segment {
        base,
        limit: limit as u32,
        selector: (index * 8) | u16::from(dpl),
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_descriptors_have_the_standard_encodings() {
        assert_eq!(flat(KERNEL_CODE64), 0x00af_9b00_0000_ffff);
        assert_eq!(flat(KERNEL_DATA), 0x00cf_9300_0000_ffff);
        assert_eq!(flat(USER_DATA), 0x00cf_f300_0000_ffff);
        assert_eq!(flat(USER_CODE64), 0x00af_fb00_0000_ffff);
    }

    #[test]
    fn flat_32_bit_code_segment_decodes_back() {
        let s = segment(flat(KERNEL_CODE32), 1);
        assert_eq!((s.base, s.limit, s.selector), (0, 0xffff_ffff, 8));
        assert_eq!((s.type_, s.s, s.present, s.db, s.l, s.g), (0xb, 1, 1, 1, 0, 1));
    }

    #[test]
    fn user_code_selector_carries_rpl_3_and_long_mode() {
        let s = segment(flat(USER_CODE64), 4);
        assert_eq!((s.selector, s.dpl, s.l, s.db), (0x23, 3, 1, 0));
    }

    #[test]
    fn tss_descriptor_splits_a_high_base_into_the_second_slot() {
        let [lo, hi] = tss64(0x1_0000_6000, 0x2068);
        assert_eq!(lo, 0x0000_8b00_6000_2068);
        assert_eq!(hi, 1);
        let s = segment(lo, 5);
        assert_eq!((s.type_, s.s, s.limit, s.base), (0xb, 0, 0x2068, 0x6000));
    }
}
