//! The Intel MultiProcessor Specification (1.4) table: how a kernel without ACPI learns about
//! the vCPUs' local APICs, the I/O APIC and the ISA interrupt routing. It lives in the EBDA
//! at 0x9fc00, where Linux scans for the `_MP_` floating pointer.

use vm_memory::{Bytes, GuestAddress};

use super::EBDA_START;
use crate::vstate::GuestMemoryMmap;

/// Errors from writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs do not fit in an MP table (at most 254)")]
    TooManyCpus(u8),
    #[error("cannot write the MP table at {addr:#x}")]
    Write {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_PINS: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)).wrapping_neg()
}

/// Build the floating pointer plus configuration table for `vcpus`, to live at `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > 254 {
        return Err(MpTableError::TooManyCpus(vcpus));
    }
    let ioapic_id = vcpus; // the first APIC ID after the processors'
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        let flags = 1 | if id == 0 { 2 } else { 0 }; // enabled, boot processor
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // family 6 signature
        entries.extend_from_slice(&((1u32 << 9) | 1).to_le_bytes()); // APIC, FPU
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // INT, conforming polarity/trigger (edge, active high on ISA), bus 0 IRQ pin → pin.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // Local interrupts: ExtINT on LINT0 of the BSP, NMI on LINT1 of every processor.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let config_addr = base + 16;
    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    config.push(4); // spec revision 1.4
    config.push(0); // checksum, below
    config.extend_from_slice(b"CVBENCH ");
    config.extend_from_slice(b"MICROVM     ");
    config.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    config.extend_from_slice(&0u16.to_le_bytes());
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(config_addr as u32).to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 1 (×16), rev 1.4, checksum, features
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&config);
    Ok(fp)
}

/// Write the MP table for `vcpus` at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    let table = build(vcpus, EBDA_START)?;
    mem.write_slice(&table, GuestAddress(EBDA_START)).map_err(|source| MpTableError::Write { addr: EBDA_START, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn both_checksums_make_their_structures_sum_to_zero() {
        let t = build(2, EBDA_START).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(&t[16..20], b"PCMP");
        assert_eq!(sum(&t[16..16 + len]), 0);
        assert_eq!(t.len(), 16 + len);
    }

    #[test]
    fn one_processor_entry_per_vcpu_and_only_the_first_is_the_bsp() {
        let t = build(3, EBDA_START).unwrap();
        let entries = &t[16 + 44..];
        let cpus: Vec<&[u8]> = (0..3).map(|i| &entries[i * 20..i * 20 + 20]).collect();
        assert!(cpus.iter().all(|c| c[0] == 0));
        assert_eq!(cpus[0][3], 3);
        assert_eq!(cpus[1][3], 1);
        assert_eq!(entries[60], 1, "the bus entry follows the processors");
    }

    #[test]
    fn floating_pointer_points_at_the_config_table() {
        let t = build(1, 0x9fc00).unwrap();
        assert_eq!(u32::from_le_bytes([t[4], t[5], t[6], t[7]]), 0x9fc10);
    }

    #[test]
    fn zero_vcpus_is_rejected() {
        assert!(build(0, EBDA_START).is_err());
    }
}
