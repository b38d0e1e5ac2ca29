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

    /// A UART continuing from `state` (checked: at most a FIFO's worth of pending input).
    pub fn from_state(state: &SerialSnapshot, irq: EventFd, out: ConsoleOut) -> Result<Serial, String> {
        let s = vm_superio::serial::SerialState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        vm_superio::Serial::from_state(&s, IrqTrigger(irq), vm_superio::serial::NoEvents, out)
            .map(|uart| Serial { uart })
            .map_err(|e| format!("{e:?}"))
    }

    /// The UART's registers and pending input, for a snapshot.
    pub fn snapshot(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Queue bytes the guest reads as console input (raising the receive interrupt); returns
    /// how many fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Flush buffered console output (at exit).
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

/// The UART's registers and receive FIFO as a snapshot keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// Input the guest has not read yet (at most the 64-byte FIFO).
    pub in_buffer: Vec<u8>,
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
    fn registers_and_pending_input_survive_a_snapshot() {
        let mut s = Serial::new(EventFd::new(0).unwrap(), Box::new(Sink::default()));
        s.write(3, 0x03); // line control: 8 data bits
        s.write(7, 0x5a); // scratch
        assert_eq!(s.enqueue_input(b"go\n"), 3);
        let snap = s.snapshot();
        let mut back = Serial::from_state(&snap, EventFd::new(0).unwrap(), Box::new(Sink::default())).unwrap();
        assert_eq!(back.read(7), 0x5a);
        assert_eq!(back.read(3), 0x03);
        assert_eq!([back.read(0), back.read(0), back.read(0)], *b"go\n");
    }

    #[test]
    fn pending_input_beyond_the_fifo_is_refused() {
        let snap = SerialSnapshot { in_buffer: vec![0; 65], ..Default::default() };
        assert!(Serial::from_state(&snap, EventFd::new(0).unwrap(), Box::new(Sink::default())).is_err());
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
