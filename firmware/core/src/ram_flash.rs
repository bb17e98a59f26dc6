//! A NOR flash in RAM, for tests, the host twin and the on-target self-test.
//!
//! It behaves as NOR flash does, strictly: erase sets a whole sector to
//! `0xFF`; a write may only go onto erased bytes (writing twice is refused,
//! as flash with ECC refuses it), at `WRITE` alignment. And it can lose power:
//! [`RamFlash::cut_power_at`] picks the write or erase step that is torn
//! halfway (part of the bytes programmed, one byte half programmed; part of
//! the sector erased) and after which every operation fails, as if the
//! device had died. [`RamFlash::restore_power`] is the next boot.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a [`RamFlash`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    /// Offset or length not aligned, or out of bounds.
    Bounds,
    /// A write onto bytes that are not erased.
    NotErased,
    /// The power was cut (this step was torn, or came after the cut).
    PowerLost,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::Bounds => NorFlashErrorKind::OutOfBounds,
            RamFlashError::NotErased | RamFlashError::PowerLost => NorFlashErrorKind::Other,
        }
    }
}

/// `SIZE` bytes of NOR flash in sectors of `ERASE` bytes, written in units of
/// `WRITE` bytes.
#[derive(Clone)]
pub struct RamFlash<const SIZE: usize, const ERASE: usize, const WRITE: usize> {
    mem: [u8; SIZE],
    steps: u32,
    cut_at: Option<u32>,
    dead: bool,
    last_erase: Option<u32>,
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> Default
    for RamFlash<SIZE, ERASE, WRITE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> RamFlash<SIZE, ERASE, WRITE> {
    /// An erased flash.
    pub const fn new() -> Self {
        RamFlash {
            mem: [0xFF; SIZE],
            steps: 0,
            cut_at: None,
            dead: false,
            last_erase: None,
        }
    }

    /// Write and erase steps carried out so far (torn ones included).
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The step number of the latest erase (torn or not).
    pub fn last_erase_step(&self) -> Option<u32> {
        self.last_erase
    }

    /// Tears the write or erase step number `step` (counted from 0 with
    /// [`RamFlash::steps`]) and fails everything after it.
    pub fn cut_power_at(&mut self, step: u32) {
        self.cut_at = Some(step);
    }

    /// Power is back: operations work again, the flash keeps what it holds.
    pub fn restore_power(&mut self) {
        self.cut_at = None;
        self.dead = false;
    }

    /// The raw contents (to corrupt them on purpose in a test).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem
    }

    /// Counts a step; `Ok(true)` when this step is the torn one.
    fn step(&mut self) -> Result<bool, RamFlashError> {
        if self.dead {
            return Err(RamFlashError::PowerLost);
        }
        let n = self.steps;
        self.steps += 1;
        if self.cut_at == Some(n) {
            self.dead = true;
            return Ok(true);
        }
        Ok(false)
    }
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> ErrorType
    for RamFlash<SIZE, ERASE, WRITE>
{
    type Error = RamFlashError;
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> ReadNorFlash
    for RamFlash<SIZE, ERASE, WRITE>
{
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self.dead {
            return Err(RamFlashError::PowerLost);
        }
        let start = offset as usize;
        let end = start
            .checked_add(bytes.len())
            .ok_or(RamFlashError::Bounds)?;
        bytes.copy_from_slice(self.mem.get(start..end).ok_or(RamFlashError::Bounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> NorFlash
    for RamFlash<SIZE, ERASE, WRITE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if from > to || to > SIZE || !from.is_multiple_of(ERASE) || !to.is_multiple_of(ERASE) {
            return Err(RamFlashError::Bounds);
        }
        self.last_erase = (!self.dead).then_some(self.steps);
        if self.step()? {
            let mid = from + (to - from) / 2;
            self.mem[from..mid].fill(0xFF);
            return Err(RamFlashError::PowerLost);
        }
        self.mem[from..to].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        let end = start
            .checked_add(bytes.len())
            .ok_or(RamFlashError::Bounds)?;
        if !start.is_multiple_of(WRITE) || !bytes.len().is_multiple_of(WRITE) || end > SIZE {
            return Err(RamFlashError::Bounds);
        }
        // Bytes written as 0xFF leave the cell erased, so only the others
        // need erased cells.
        let clash = self.mem[start..end]
            .iter()
            .zip(bytes)
            .any(|(&m, &b)| b != 0xFF && m != 0xFF);
        if clash && !self.dead {
            return Err(RamFlashError::NotErased);
        }
        if self.step()? {
            let half = bytes.len() / 2;
            for (m, &b) in self.mem[start..start + half].iter_mut().zip(bytes) {
                *m &= b;
            }
            if half < bytes.len() {
                // One byte half programmed.
                self.mem[start + half] &= bytes[half] | 0x0F;
            }
            return Err(RamFlashError::PowerLost);
        }
        for (m, &b) in self.mem[start..end].iter_mut().zip(bytes) {
            *m &= b;
        }
        Ok(())
    }
}
