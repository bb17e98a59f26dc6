//! A device's way out, as on a board: a report's samples are encoded by the
//! core's [`Report`] into packs in a fixed buffer, each pack is appended to
//! the core's flash [`Outbox`] (on a [`RamFlash`]) *before* it is sent, and
//! released only when the gateway acknowledges its `bt`. When the link is
//! up, live packs go first, then the backlog, oldest first.
//!
//! The outbox region is 64 KiB in 4 KiB sectors: about 150 fifteen-minute
//! pump-house packs, a day and a half of backlog; beyond that the oldest
//! sector is dropped and counted ([`Uplink::dropped`]).
//!
//! Cost note: the core's [`Outbox::release`] scans every record in the region
//! (checking CRCs) per release, so releasing costs O(region) bytes; at one
//! pack per 15 minutes that is a few milliseconds per simulated day. The MQTT
//! device ([`crate::device::SimDevice`]) keeps its packs in memory instead.

use apr_firmware::outbox::Outbox;
use apr_firmware::ram_flash::RamFlash;
use apr_firmware::{Identity, Report, Sample};

use crate::TwinError;

/// The outbox's flash: 64 KiB, 4 KiB sectors, 8-byte writes.
pub type OutboxFlash = RamFlash<65_536, 4_096, 8>;
const SECTORS: u32 = 16;
const PACK_BUFFER: usize = 2048;

/// One device's outbox and encoder.
pub struct Uplink {
    apr: String,
    device: String,
    outbox: Box<Outbox<OutboxFlash>>,
    last_bt: f64,
    /// Packs queued since the last delivery (live), oldest first.
    live: Vec<(f64, Vec<u8>)>,
    buf: Vec<u8>,
}

fn flash_error(e: impl std::fmt::Display) -> TwinError {
    TwinError::Hardware(format!("outbox: {e}"))
}

impl Uplink {
    /// A device's uplink with a blank outbox.
    pub fn new(apr: &str, device: &str) -> Result<Self, TwinError> {
        Identity::new(apr, device).map_err(|_| TwinError::Identity {
            apr: apr.into(),
            device: device.into(),
        })?;
        let (outbox, _) = Outbox::mount(OutboxFlash::new(), 0, SECTORS).map_err(flash_error)?;
        Ok(Uplink {
            apr: apr.into(),
            device: device.into(),
            last_bt: outbox.last_bt(),
            outbox: Box::new(outbox),
            live: Vec::new(),
            buf: vec![0; PACK_BUFFER],
        })
    }

    /// Encodes `samples` into packs and appends each to the outbox.
    pub fn queue(&mut self, samples: &[Sample]) -> Result<(), TwinError> {
        let id = Identity::new(&self.apr, &self.device).map_err(|_| TwinError::Identity {
            apr: self.apr.clone(),
            device: self.device.clone(),
        })?;
        let mut report = Report::new(id, self.last_bt);
        let mut done = 0;
        while done < samples.len() {
            let (len, bt, n) = report
                .next_pack(&mut self.buf, &samples[done..])
                .map_err(|e| TwinError::Encode {
                    apr: self.apr.clone(),
                    device: self.device.clone(),
                    reason: format!("{e:?}"),
                })?;
            self.outbox
                .append(bt, &self.buf[..len])
                .map_err(flash_error)?;
            self.live.push((bt, self.buf[..len].to_vec()));
            done += n;
        }
        self.last_bt = report.last_bt();
        Ok(())
    }

    /// Packs waiting for their acknowledgment.
    pub fn pending(&self) -> u32 {
        self.outbox.pending_count()
    }

    /// Packs dropped because the outbox was full.
    pub fn dropped(&self) -> u32 {
        self.outbox.dropped()
    }

    /// The link is up: sends the live packs, then the backlog oldest first.
    /// `send` returns whether the gateway acknowledged the pack (its `bt`
    /// came back on `ack`); acknowledged packs are released. Returns the
    /// packs sent.
    pub fn deliver(
        &mut self,
        mut send: impl FnMut(f64, &[u8]) -> bool,
    ) -> Result<usize, TwinError> {
        let live = std::mem::take(&mut self.live);
        let mut sent = 0;
        for (bt, payload) in &live {
            sent += 1;
            if send(*bt, payload) {
                self.outbox.release(*bt).map_err(flash_error)?;
            }
        }
        if self.outbox.pending_count() == 0 {
            return Ok(sent);
        }
        let mut backlog = Vec::new();
        {
            let mut it = self.outbox.pending();
            let mut buf = vec![0u8; PACK_BUFFER * 2];
            while let Some(p) = it.next(&mut buf).map_err(flash_error)? {
                if !live.iter().any(|(bt, _)| *bt == p.bt) {
                    backlog.push((p.bt, buf[..p.len].to_vec()));
                }
            }
        }
        for (bt, payload) in backlog {
            sent += 1;
            if send(bt, &payload) {
                self.outbox.release(bt).map_err(flash_error)?;
            }
        }
        Ok(sent)
    }

    /// The link is down: the live packs stay in the outbox only.
    pub fn hold(&mut self) {
        self.live.clear();
    }
}
