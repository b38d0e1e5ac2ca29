//! virtio-blk backed by a raw image file: one request queue served by a worker thread that
//! does positioned reads and writes on the file (no host page-cache bypass; `fsync` on FLUSH).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::ByteValued;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::state::DeviceSnapshot;
use super::{ActivateContext, Interrupt, VirtioDevice, VirtioError, Worker, VIRTIO_F_VERSION_1};
use crate::vstate::GuestMemoryMmap;

const VIRTIO_ID_BLOCK: u32 = 2;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const SECTOR: u64 = 512;
const QUEUE_SIZES: &[u16] = &[256];

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// The request header at the start of every chain.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RequestHeader {
    kind: u32,
    _reserved: u32,
    sector: u64,
}

// SAFETY: plain-old-data made of integers only, no padding, any bit pattern is valid.
unsafe impl ByteValued for RequestHeader {}

/// A virtio block device over a raw file.
pub struct Block {
    file: Option<File>,
    path: PathBuf,
    read_only: bool,
    config: [u8; 8],
}

impl Block {
    /// Open `path` (read-write unless `read_only`) as the disk.
    pub fn open(path: &Path, read_only: bool) -> Result<Block, VirtioError> {
        let open_err = |source| VirtioError::OpenDisk { path: path.to_path_buf(), source };
        let file = std::fs::OpenOptions::new().read(true).write(!read_only).open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        Ok(Block { file: Some(file), path: path.to_path_buf(), read_only, config: (len / SECTOR).to_le_bytes() })
    }
}

impl VirtioDevice for Block {
    fn name(&self) -> &'static str {
        "virtio-blk"
    }
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }
    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | ro
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }
    fn state(&self) -> DeviceSnapshot {
        DeviceSnapshot::Block { sectors: u64::from_le_bytes(self.config), read_only: self.read_only }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<Worker, VirtioError> {
        let mut queues = ctx.queues;
        if queues.len() != 1 {
            return Err(VirtioError::QueueCount(self.name(), queues.len(), 1));
        }
        let file = self.file.take().ok_or_else(|| VirtioError::OpenDisk {
            path: self.path.clone(),
            source: std::io::Error::other("device activated twice"),
        })?;
        let worker = BlockWorker {
            file,
            mem: ctx.mem,
            queue: queues.remove(0),
            interrupt: ctx.interrupt,
            disk_id: disk_id(&self.path),
        };
        super::spawn_worker(self.name(), worker, ctx.notify, ctx.stop, BlockWorker::run, |w| vec![w.queue])
    }
}

/// The 20-byte serial number the guest reads with GET_ID: the image's file name.
fn disk_id(path: &Path) -> [u8; 20] {
    let mut id = [0u8; 20];
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let n = name.len().min(20);
    id[..n].copy_from_slice(&name.as_bytes()[..n]);
    id
}

struct BlockWorker {
    file: File,
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
    disk_id: [u8; 20],
}

impl BlockWorker {
    fn run(&mut self, notify: &EventFd, stop: &EventFd) {
        let Ok(epoll) = Epoll::new() else { return };
        let add = |fd, data| epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, data));
        use std::os::fd::AsRawFd;
        if add(notify.as_raw_fd(), 0).is_err() || add(stop.as_raw_fd(), 1).is_err() {
            return;
        }
        let mut events = [EpollEvent::default(); 4];
        loop {
            let Ok(n) = epoll.wait(-1, &mut events) else {
                continue;
            };
            for ev in &events[..n] {
                if ev.data() == 1 {
                    return;
                }
                let _ = notify.read();
                self.process_queue();
            }
        }
    }

    /// Serve every available request, then interrupt the guest once.
    fn process_queue(&mut self) {
        let mut used_any = false;
        let mem = self.mem.clone();
        while let Some(chain) = self.queue.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let written = self.serve(&mem, chain);
            if self.queue.add_used(&mem, head, written).is_err() {
                break;
            }
            used_any = true;
        }
        if used_any {
            self.interrupt.signal_used();
        }
    }

    /// Serve one request; returns the number of bytes written into guest buffers.
    fn serve(&mut self, mem: &GuestMemoryMmap, chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let (Ok(mut reader), Ok(mut writer)) =
            (virtio_queue::Reader::<()>::new(mem, chain.clone()), virtio_queue::Writer::<()>::new(mem, chain))
        else {
            return 0;
        };
        let Ok(header) = reader.read_obj::<RequestHeader>() else {
            return 0;
        };
        let avail = writer.available_bytes();
        if avail == 0 {
            return 0; // no room for a status byte: nothing sensible to report
        }
        let Ok(mut status_writer) = writer.split_at(avail - 1) else {
            return 0;
        };
        let offset = header.sector.saturating_mul(SECTOR);
        let (status, data_len) = match header.kind {
            T_IN => {
                let mut buf = vec![0u8; writer.available_bytes()];
                match self.file.read_at(&mut buf, offset) {
                    // Reads past the end of the image return zeros (short read).
                    Ok(_) => match writer.write_all(&buf) {
                        Ok(()) => (S_OK, buf.len()),
                        Err(_) => (S_IOERR, 0),
                    },
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_OUT => {
                let mut buf = vec![0u8; reader.available_bytes()];
                match reader.read_exact(&mut buf) {
                    Ok(()) => match self.file.write_all_at(&buf, offset) {
                        Ok(()) => (S_OK, 0),
                        Err(_) => (S_IOERR, 0),
                    },
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let n = writer.available_bytes().min(self.disk_id.len());
                match writer.write_all(&self.disk_id[..n]) {
                    Ok(()) => (S_OK, n),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        };
        let _ = status_writer.write_all(&[status]);
        (data_len + 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_reported_in_512_byte_sectors() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(3 * 1024 * 1024).unwrap();
        let dev = Block::open(f.path(), false).unwrap();
        let mut cap = [0u8; 8];
        dev.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 6144);
    }

    #[test]
    fn open_names_the_missing_image() {
        let err = Block::open(Path::new("/nonexistent/disk.img"), false).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/disk.img"));
    }

    #[test]
    fn disk_id_is_the_file_name_truncated_to_20_bytes() {
        let id = disk_id(Path::new("/x/a-very-long-image-name.img"));
        assert_eq!(&id, b"a-very-long-image-na");
    }
}
