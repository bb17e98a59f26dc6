//! The device's outbox: packs kept in NOR flash from before they are sent
//! until the gateway names their `bt` on the `ack` topic (CONTRACT §2).
//!
//! # Design constraints
//!
//! - **Written before sent.** [`Outbox::append`] returns only once the pack is
//!   in flash and read back; the caller publishes it after that. A reboot at
//!   any point loses no pack whose append returned `Ok`.
//! - **Released only by the end-to-end ack.** The broker's PUBACK does not
//!   release a pack: [`Outbox::release`] does, when the gateway names the
//!   pack's `bt` on `ack`. Until then [`Outbox::pending`] hands it out again
//!   for resend, oldest first.
//! - **NOR flash rules.** A byte can only go from erased (`0xFF`) to written
//!   and back by erasing its whole sector; a unit may be written once. So
//!   nothing is ever rewritten in place: releasing a pack programs a small
//!   marker that was left erased for the purpose.
//! - **No corrupt pack is ever returned.** A power cut can tear any write or
//!   erase. Every record's header carries its own CRC-32 and the payload's:
//!   a payload that does not check out is skipped (the header says where the
//!   next record is); a header that does not check out ends the scan of its
//!   sector, and the sector is never written again, so nothing is ever
//!   appended after (or onto) torn bytes.
//! - **When full, the oldest go.** When no sector is free, the oldest sector
//!   is erased: its still-pending packs are dropped, and their number is
//!   added to a count kept in flash, so the next report can say how many
//!   readings were lost ([`Outbox::dropped`]).
//! - **No allocator, bounded stack.** All flash access goes through a 32-byte
//!   scratch buffer; payloads are read into the caller's buffer.
//!
//! # On-flash format
//!
//! The outbox owns a region of whole erase sectors (at least two). All
//! integers are little-endian. `U` is the flash's write size (a power of two
//! up to 32); every field group below starts on a multiple of `U` and is
//! padded with `0xFF` to one.
//!
//! A sector in use starts with a **sector header**:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `"APRo"` |
//! | 4..8 | sector sequence: 1 + the highest in the region when opened |
//! | 8..12 | packs dropped since the region was first formatted (cumulative) |
//! | 12..16 | CRC-32 of bytes 0..12 |
//!
//! A sector without a valid header is free (erased, or torn while being
//! erased or opened) and is erased again before use. Then come **records**,
//! back to back:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | magic `0x5A17` |
//! | 2..4 | payload length `n` |
//! | 4..8 | record sequence (grows by one per append, across sectors) |
//! | 8..16 | the pack's `bt` in milliseconds since the epoch (`i64`) |
//! | 16..20 | CRC-32 of the payload |
//! | 20..24 | CRC-32 of bytes 0..20 (the header) |
//! | pad to `U` | header padding |
//! | `n` bytes, pad to `U` | payload: the SenML pack as published |
//! | `U` bytes | release marker: erased while pending, programmed to zeros on release |
//!
//! # Invariants
//!
//! - Records in a sector are in append order; sectors are in sector-sequence
//!   order, so iterating sectors by sequence and records by offset is oldest
//!   first.
//! - A record header is valid when its magic, CRC and length (inside the
//!   sector) check out; its pack is handed out only when the payload CRC
//!   checks out too. The scan of a sector stops at the first header that is
//!   erased (the end) or invalid (a torn write: the sector is sealed). A
//!   torn payload behind a valid header is skipped; what follows it is
//!   erased and usable.
//! - Only the sector with the highest sequence is appended to, and only when
//!   its scan ended on erased bytes *and* everything from there to the end of
//!   the sector is erased; otherwise the next append opens a new sector.
//! - A marker with any programmed bit is "released": a torn release reads as
//!   released (the ack for it did arrive) and is never programmed twice.
//! - Delivery is at least once: a pack can come back after a release in one
//!   case, a power cut while its sector is being erased to make room; the
//!   gateway and server store a `bt` once.
//! - The dropped count is written with the header of the sector that replaces
//!   the erased one: a power cut between the erase and that header loses that
//!   one sector's count (the packs were being dropped anyway).

use embedded_storage::nor_flash::NorFlash;

use crate::crc::{crc32, Crc32};
use crate::error::Error;

const SECTOR_MAGIC: [u8; 4] = *b"APRo";
const SECTOR_HEADER: u32 = 16;
const RECORD_MAGIC: u16 = 0x5A17;
const RECORD_HEADER: u32 = 24;
const SCRATCH: usize = 32;

/// A pending pack handed out by [`Pending::next`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingPack {
    /// The pack's base time, seconds since the epoch (its name on `ack`).
    pub bt: f64,
    /// Its record sequence (append order).
    pub seq: u32,
    /// Payload length; the payload is in the caller's buffer.
    pub len: usize,
}

/// What a mount found (for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountReport {
    /// Sectors holding records.
    pub sectors_in_use: u32,
    /// Packs waiting for their ack.
    pub pending: u32,
    /// Sectors whose scan ended on a torn or corrupt record header.
    pub torn_sectors: u32,
    /// Records skipped because their payload does not check out.
    pub damaged_packs: u32,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    offset: u32,
    len: u32,
    seq: u32,
    bt_ms: i64,
    /// The payload checks out.
    intact: bool,
    released: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanEnd {
    /// Erased header at this offset.
    Erased(u32),
    /// Invalid (torn, corrupt) record at this offset.
    Invalid,
    /// No room for another header.
    Full,
}

/// The outbox over a flash region.
pub struct Outbox<F> {
    flash: F,
    base: u32,
    sectors: u32,
    /// Sector index and offset of the next record, when appendable.
    head: Option<(u32, u32)>,
    next_seq: u32,
    next_sector_seq: u32,
    dropped: u32,
    pending: u32,
    last_bt_ms: i64,
}

const fn round_up(n: u32, unit: u32) -> u32 {
    n.div_ceil(unit) * unit
}

fn bt_to_ms(bt: f64) -> i64 {
    // `as` saturates; a `bt` is a few 1e12 ms at most.
    let ms = bt * 1000.0;
    let r = ms as i64;
    // Round half away from zero without `f64::round` (not in `core`).
    let frac = ms - r as f64;
    if frac >= 0.5 {
        r + 1
    } else if frac <= -0.5 {
        r - 1
    } else {
        r
    }
}

impl<F: NorFlash> Outbox<F> {
    const UNIT: u32 = F::WRITE_SIZE as u32;
    const SECTOR: u32 = F::ERASE_SIZE as u32;
    const HDR: u32 = round_up(RECORD_HEADER, Self::UNIT);
    const SECTOR_HDR: u32 = round_up(SECTOR_HEADER, Self::UNIT);

    /// Opens the outbox in `sectors` erase sectors of `flash` from byte
    /// `base`, after any power cut: scans what is there, never trusting a
    /// record that does not check out. A blank region is a valid empty
    /// outbox.
    pub fn mount(
        flash: F,
        base: u32,
        sectors: u32,
    ) -> Result<(Self, MountReport), Error<F::Error>> {
        let unit = F::WRITE_SIZE;
        let layout_ok = unit.is_power_of_two()
            && unit <= SCRATCH
            && F::READ_SIZE.is_power_of_two()
            && F::READ_SIZE <= SCRATCH
            && F::ERASE_SIZE.is_multiple_of(SCRATCH)
            && F::ERASE_SIZE <= u32::MAX as usize / 2
            && sectors >= 2
            && base.is_multiple_of(Self::SECTOR)
            && (base as usize)
                .checked_add(sectors as usize * F::ERASE_SIZE)
                .is_some_and(|end| end <= flash.capacity())
            && Self::max_payload_for_sector() > 0;
        if !layout_ok {
            return Err(Error::FlashLayout);
        }
        let mut ob = Outbox {
            flash,
            base,
            sectors,
            head: None,
            next_seq: 0,
            next_sector_seq: 1,
            dropped: 0,
            pending: 0,
            last_bt_ms: 0,
        };
        let mut report = MountReport::default();
        let mut newest: Option<(u32, u32)> = None;
        for s in 0..sectors {
            let Some((seq, dropped)) = ob.sector_header(s)? else {
                continue;
            };
            report.sectors_in_use += 1;
            if newest.is_none_or(|(_, best)| seq > best) {
                newest = Some((s, seq));
                ob.dropped = dropped;
            }
            ob.next_sector_seq = ob.next_sector_seq.max(seq.wrapping_add(1));
            let (mut pending, mut max_seq, mut last_bt) = (0u32, None::<u32>, ob.last_bt_ms);
            let mut damaged = 0u32;
            let end = ob.scan(s, |r| {
                if !r.intact {
                    damaged += 1;
                } else if !r.released {
                    pending += 1;
                }
                max_seq = Some(max_seq.map_or(r.seq, |m| m.max(r.seq)));
                last_bt = last_bt.max(r.bt_ms);
                false
            })?;
            ob.pending += pending;
            report.damaged_packs += damaged;
            ob.last_bt_ms = last_bt;
            if let Some(m) = max_seq {
                ob.next_seq = ob.next_seq.max(m.wrapping_add(1));
            }
            if end == ScanEnd::Invalid {
                report.torn_sectors += 1;
            }
        }
        if let Some((s, _)) = newest {
            if let ScanEnd::Erased(offset) = ob.scan(s, |_| false)? {
                if ob.is_erased(ob.sector_start(s) + offset, Self::SECTOR - offset)? {
                    ob.head = Some((s, offset));
                }
            }
        }
        report.pending = ob.pending;
        Ok((ob, report))
    }

    /// Gives the flash back.
    pub fn unmount(self) -> F {
        self.flash
    }

    /// Largest pack [`Outbox::append`] takes, bytes.
    pub fn max_payload(&self) -> usize {
        Self::max_payload_for_sector() as usize
    }

    fn max_payload_for_sector() -> u32 {
        let overhead = Self::SECTOR_HDR + Self::HDR + Self::UNIT;
        let room = Self::SECTOR.saturating_sub(overhead);
        (room / Self::UNIT * Self::UNIT).min(u32::from(u16::MAX))
    }

    /// Packs waiting for their ack.
    pub fn pending_count(&self) -> u32 {
        self.pending
    }

    /// Packs dropped to make room since the region was first used
    /// (cumulative, like a totaliser: report it, compare with the last).
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The highest `bt` ever stored here, seconds (0 for an empty outbox):
    /// the `last_bt` to give [`crate::Report::new`] after a restart, so base
    /// times stay unique.
    pub fn last_bt(&self) -> f64 {
        self.last_bt_ms as f64 / 1000.0
    }

    /// Stores a pack (its `bt` and its bytes) before it is sent. Returns its
    /// record sequence. When the region is full the oldest sector is erased
    /// first (see [`Outbox::dropped`]).
    pub fn append(&mut self, bt: f64, payload: &[u8]) -> Result<u32, Error<F::Error>> {
        if payload.len() > self.max_payload() {
            return Err(Error::PackTooLarge);
        }
        let len = payload.len() as u32;
        let size = Self::HDR + round_up(len, Self::UNIT) + Self::UNIT;
        let fits = |(_, off): (u32, u32)| off + size <= Self::SECTOR;
        let (sector, offset) = match self.head.filter(|&h| fits(h)) {
            Some(h) => h,
            None => self.open_sector()?,
        };
        let at = self.sector_start(sector) + offset;
        let seq = self.next_seq;
        let bt_ms = bt_to_ms(bt);

        let mut header = [0xFFu8; SCRATCH];
        header[0..2].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        header[2..4].copy_from_slice(&(len as u16).to_le_bytes());
        header[4..8].copy_from_slice(&seq.to_le_bytes());
        header[8..16].copy_from_slice(&bt_ms.to_le_bytes());
        header[16..20].copy_from_slice(&crc32(payload).to_le_bytes());
        let hcrc = crc32(&header[..20]);
        header[20..24].copy_from_slice(&hcrc.to_le_bytes());

        // From here on a failure may leave bytes behind: seal the sector.
        self.head = None;
        self.write(at, &header[..Self::HDR as usize])?;
        self.write_padded(at + Self::HDR, payload)?;
        match self.read_record(sector, offset)? {
            Some(r) if r.intact && r.seq == seq && r.len == len && r.bt_ms == bt_ms => {}
            _ => return Err(Error::Verify),
        }
        self.head = Some((sector, offset + size));
        self.next_seq = seq.wrapping_add(1);
        self.pending += 1;
        self.last_bt_ms = self.last_bt_ms.max(bt_ms);
        Ok(seq)
    }

    /// Releases the pack(s) stored with this `bt` (compared to the
    /// millisecond) once the gateway named it on `ack`. Returns whether a
    /// pending pack was released: an ack for a pack released before, or
    /// never stored here, is not an error.
    pub fn release(&mut self, bt: f64) -> Result<bool, Error<F::Error>> {
        let bt_ms = bt_to_ms(bt);
        let mut released = false;
        for s in 0..self.sectors {
            if self.sector_header(s)?.is_none() {
                continue;
            }
            let mut offset = Self::SECTOR_HDR;
            loop {
                let Some(r) = self.read_record(s, offset)? else {
                    break;
                };
                if r.intact && r.bt_ms == bt_ms && !r.released {
                    let marker =
                        self.sector_start(s) + offset + Self::HDR + round_up(r.len, Self::UNIT);
                    let zeros = [0u8; SCRATCH];
                    self.write(marker, &zeros[..Self::UNIT as usize])?;
                    self.pending = self.pending.saturating_sub(1);
                    released = true;
                }
                offset = r.offset + Self::record_size(r.len);
            }
        }
        Ok(released)
    }

    /// The pending packs, oldest first, for resend.
    pub fn pending(&mut self) -> Pending<'_, F> {
        Pending {
            outbox: self,
            at: None,
        }
    }

    const fn record_size(len: u32) -> u32 {
        Self::HDR + round_up(len, Self::UNIT) + Self::UNIT
    }

    fn sector_start(&self, s: u32) -> u32 {
        self.base + s * Self::SECTOR
    }

    /// `(sector sequence, dropped)` of a sector in use.
    fn sector_header(&mut self, s: u32) -> Result<Option<(u32, u32)>, Error<F::Error>> {
        let mut h = [0u8; SECTOR_HEADER as usize];
        self.read(self.sector_start(s), &mut h)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if h[0..4] != SECTOR_MAGIC || word(12) != crc32(&h[..12]) {
            return Ok(None);
        }
        Ok(Some((word(4), word(8))))
    }

    /// Makes a sector the head: a free one if any, else the oldest (its
    /// pending packs are dropped). Erases it, then writes its header.
    fn open_sector(&mut self) -> Result<(u32, u32), Error<F::Error>> {
        let mut free = None;
        let mut oldest: Option<(u32, u32)> = None;
        for s in 0..self.sectors {
            match self.sector_header(s)? {
                None => {
                    free = Some(s);
                    break;
                }
                Some((seq, _)) if oldest.is_none_or(|(_, o)| seq < o) => oldest = Some((s, seq)),
                Some(_) => {}
            }
        }
        let target = match (free, oldest) {
            (Some(s), _) => s,
            (None, Some((s, _))) => {
                let mut lost = 0u32;
                self.scan(s, |r| {
                    lost += u32::from(r.intact && !r.released);
                    false
                })?;
                self.pending = self.pending.saturating_sub(lost);
                self.dropped = self.dropped.saturating_add(lost);
                s
            }
            (None, None) => return Err(Error::FlashLayout),
        };
        let start = self.sector_start(target);
        self.flash
            .erase(start, start + Self::SECTOR)
            .map_err(Error::Bus)?;
        let mut h = [0xFFu8; SCRATCH];
        h[0..4].copy_from_slice(&SECTOR_MAGIC);
        h[4..8].copy_from_slice(&self.next_sector_seq.to_le_bytes());
        h[8..12].copy_from_slice(&self.dropped.to_le_bytes());
        let crc = crc32(&h[..12]);
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        self.write(start, &h[..Self::SECTOR_HDR as usize])?;
        if self.sector_header(target)?.is_none() {
            return Err(Error::Verify);
        }
        self.next_sector_seq = self.next_sector_seq.wrapping_add(1);
        self.head = Some((target, Self::SECTOR_HDR));
        Ok((target, Self::SECTOR_HDR))
    }

    /// Visits the valid records of sector `s` in order until `visit` says
    /// stop (`true`); tells how the scan ended.
    fn scan(
        &mut self,
        s: u32,
        mut visit: impl FnMut(&Record) -> bool,
    ) -> Result<ScanEnd, Error<F::Error>> {
        let mut offset = Self::SECTOR_HDR;
        loop {
            if offset + Self::HDR + Self::UNIT > Self::SECTOR {
                return Ok(ScanEnd::Full);
            }
            match self.read_record(s, offset)? {
                Some(r) => {
                    if visit(&r) {
                        return Ok(ScanEnd::Full);
                    }
                    offset += Self::record_size(r.len);
                }
                None if self.is_erased(self.sector_start(s) + offset, Self::HDR)? => {
                    return Ok(ScanEnd::Erased(offset))
                }
                None => return Ok(ScanEnd::Invalid),
            }
        }
    }

    /// The record at `offset` of sector `s`, if its header is valid.
    fn read_record(&mut self, s: u32, offset: u32) -> Result<Option<Record>, Error<F::Error>> {
        if offset + Self::HDR + Self::UNIT > Self::SECTOR {
            return Ok(None);
        }
        let at = self.sector_start(s) + offset;
        let mut h = [0u8; RECORD_HEADER as usize];
        self.read(at, &mut h)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if u16::from_le_bytes([h[0], h[1]]) != RECORD_MAGIC || word(20) != crc32(&h[..20]) {
            return Ok(None);
        }
        let len = u32::from(u16::from_le_bytes([h[2], h[3]]));
        if offset + Self::record_size(len) > Self::SECTOR {
            return Ok(None);
        }
        let mut crc = Crc32::new();
        let mut chunk = [0u8; SCRATCH];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(SCRATCH as u32);
            self.read(at + Self::HDR + done, &mut chunk[..n as usize])?;
            crc.update(&chunk[..n as usize]);
            done += n;
        }
        let marker_at = at + Self::HDR + round_up(len, Self::UNIT);
        let released = !self.is_erased(marker_at, Self::UNIT)?;
        let mut bt = [0u8; 8];
        bt.copy_from_slice(&h[8..16]);
        Ok(Some(Record {
            offset,
            len,
            seq: word(4),
            bt_ms: i64::from_le_bytes(bt),
            intact: crc.finish() == word(16),
            released,
        }))
    }

    fn is_erased(&mut self, at: u32, len: u32) -> Result<bool, Error<F::Error>> {
        let mut chunk = [0u8; SCRATCH];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(SCRATCH as u32);
            self.read(at + done, &mut chunk[..n as usize])?;
            if chunk[..n as usize].iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    /// Reads any range, through READ_SIZE-aligned blocks when needed.
    fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), Error<F::Error>> {
        let rs = F::READ_SIZE as u32;
        if rs <= 1 {
            return self.flash.read(at, out).map_err(Error::Bus);
        }
        let mut block = [0u8; SCRATCH];
        let mut done = 0usize;
        while done < out.len() {
            let pos = at + done as u32;
            let start = pos / SCRATCH as u32 * SCRATCH as u32;
            self.flash.read(start, &mut block).map_err(Error::Bus)?;
            let skip = (pos - start) as usize;
            let n = (SCRATCH - skip).min(out.len() - done);
            out[done..done + n].copy_from_slice(&block[skip..skip + n]);
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, at: u32, bytes: &[u8]) -> Result<(), Error<F::Error>> {
        self.flash.write(at, bytes).map_err(Error::Bus)
    }

    /// Writes `bytes` from `at` (unit aligned), padding the last unit with
    /// `0xFF`.
    fn write_padded(&mut self, at: u32, bytes: &[u8]) -> Result<(), Error<F::Error>> {
        let unit = Self::UNIT as usize;
        let whole = bytes.len() / unit * unit;
        if whole > 0 {
            self.write(at, &bytes[..whole])?;
        }
        if whole < bytes.len() {
            let mut tail = [0xFFu8; SCRATCH];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.write(at + whole as u32, &tail[..unit])?;
        }
        Ok(())
    }
}

/// Iterates the pending packs, oldest first (a lending iterator: each
/// payload goes into the caller's buffer).
pub struct Pending<'a, F> {
    outbox: &'a mut Outbox<F>,
    /// Sector index, its sequence, and the offset of the next record.
    at: Option<(u32, u32, u32)>,
}

impl<F: NorFlash> Pending<'_, F> {
    /// The next pending pack, its payload copied into `buf` (at least
    /// [`Outbox::max_payload`] bytes, or as long as the longest pack).
    pub fn next(&mut self, buf: &mut [u8]) -> Result<Option<PendingPack>, Error<F::Error>> {
        loop {
            let (s, sseq, offset) = match self.at {
                Some(at) => at,
                None => match self.sector_after(None)? {
                    Some((s, sseq)) => (s, sseq, Outbox::<F>::SECTOR_HDR),
                    None => return Ok(None),
                },
            };
            self.at = Some((s, sseq, offset));
            match self.outbox.read_record(s, offset)? {
                Some(r) => {
                    self.at = Some((s, sseq, offset + Outbox::<F>::record_size(r.len)));
                    if r.released || !r.intact {
                        continue;
                    }
                    let len = r.len as usize;
                    if buf.len() < len {
                        return Err(Error::PackTooLarge);
                    }
                    let at = self.outbox.sector_start(s) + offset + Outbox::<F>::HDR;
                    self.outbox.read(at, &mut buf[..len])?;
                    // Check the bytes handed out, not only those scanned.
                    let mut h = [0u8; RECORD_HEADER as usize];
                    self.outbox.read(at - Outbox::<F>::HDR, &mut h)?;
                    if crc32(&buf[..len]) != u32::from_le_bytes([h[16], h[17], h[18], h[19]]) {
                        continue;
                    }
                    return Ok(Some(PendingPack {
                        bt: r.bt_ms as f64 / 1000.0,
                        seq: r.seq,
                        len,
                    }));
                }
                None => match self.sector_after(Some(sseq))? {
                    Some((s2, seq2)) => self.at = Some((s2, seq2, Outbox::<F>::SECTOR_HDR)),
                    None => {
                        // Park past the end so later calls stay `None`.
                        self.at = Some((s, sseq, Outbox::<F>::SECTOR));
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// The sector in use with the smallest sequence above `after`.
    fn sector_after(&mut self, after: Option<u32>) -> Result<Option<(u32, u32)>, Error<F::Error>> {
        let mut best: Option<(u32, u32)> = None;
        for s in 0..self.outbox.sectors {
            if let Some((seq, _)) = self.outbox.sector_header(s)? {
                let later = after.is_none_or(|a| seq > a);
                if later && best.is_none_or(|(_, b)| seq < b) {
                    best = Some((s, seq));
                }
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests;
