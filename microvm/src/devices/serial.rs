//! The 8250 UART on COM1 (vm-superio's emulation): the guest console, written to a file or
//! pipe the caller chooses. Its interrupt line is an eventfd the builder wires to IRQ 4.

use std::io::Write;

use vm_superio::Trigger;

use super::BusDevice;
use vmm_sys_util::eventfd::EventFd;

/// Raises the UART's interrupt by signalling an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), std::io::Error> {
        self.0.write(1)
    }
}

/// Where the console bytes go.
pub type ConsoleOut = Box<dyn Write + Send>;

/// COM1: the console the guest kernel and `/init` print on.
pub struct Serial {
    uart: vm_superio::Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
}

impl Serial {
    /// A UART raising `irq` and writing what the guest transmits to `out`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Serial {
        Serial { uart: vm_superio::Serial::new(IrqTrigger(irq), out) }
    }

    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// A guest write to register `offset`. A failing console sink must not stop the guest, so
    /// output errors are dropped here (the harness notices missing output on its own).
    pub fn write(&mut self, offset: u8, value: u8) {
        let _ = self.uart.write(offset, value);
    }

    /// Flush buffered console output (at exit).
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for Serial {
    fn bus_read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.read(offset as u8);
        }
    }

    fn bus_write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            self.write(offset as u8, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_console() {
        let sink = Sink::default();
        let mut s = Serial::new(EventFd::new(0).unwrap(), Box::new(sink.clone()));
        for b in b"init\n" {
            s.write(0, *b);
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"init\n");
    }
}
