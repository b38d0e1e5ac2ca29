//! The i8042 keyboard controller, reduced to what a micro-VM needs: the guest kernel's
//! `reboot=k` path writes the CPU-reset command (0xfe) to port 0x64, which is how the guest
//! powers the VM off. The reset request is latched in a [`PowerOff`] flag the vCPUs poll.

use vm_superio::Trigger;

use super::{BusDevice, PowerOff};

/// Latches a guest reset request.
pub struct ResetTrigger(PowerOff);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request();
        Ok(())
    }
}

/// The controller at ports 0x60 (data) and 0x64 (command/status).
pub struct I8042 {
    dev: vm_superio::I8042Device<ResetTrigger>,
}

impl I8042 {
    pub fn new(power_off: PowerOff) -> I8042 {
        I8042 { dev: vm_superio::I8042Device::new(ResetTrigger(power_off)) }
    }

    pub fn read(&mut self, port: u16) -> u8 {
        self.dev.read((port - 0x60) as u8)
    }

    pub fn write(&mut self, port: u16, value: u8) {
        let Ok(()) = self.dev.write((port - 0x60) as u8, value);
    }
}

/// Registered at 0x60 for five ports: offsets 0 (data) and 4 (command) are the controller's;
/// 0x61..0x63 read as an empty bus and drop writes, as when they were unclaimed.
impl BusDevice for I8042 {
    fn bus_read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(b), 0 | 4) = (data.first_mut(), offset) {
            *b = self.read(0x60 + offset as u16);
        }
    }

    fn bus_write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&b), 0 | 4) = (data.first(), offset) {
            self.write(0x60 + offset as u16, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_on_port_0x64_requests_power_off() {
        let flag = PowerOff::default();
        let mut dev = I8042::new(flag.clone());
        dev.write(0x60, 0xfe);
        assert!(!flag.requested());
        dev.write(0x64, 0xfe);
        assert!(flag.requested());
    }
}
