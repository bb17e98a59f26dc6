//! The outbox's region of the STM32F411's internal flash, as an
//! `embedded-storage` NOR flash the core's [`apr_firmware::outbox::Outbox`]
//! mounts.
//!
//! The region is sectors 5-7 (`0x0802_0000`, 3 × 128 KiB); `memory.x` keeps
//! the program below it. Offsets here are relative to the region's start, so
//! the outbox can never touch the program. The flash is unlocked for each
//! erase or write and locked again when it returns (the HAL's
//! `UnlockedFlash` locks on drop), so a stray write elsewhere in the
//! firmware faults instead of corrupting flash.
//!
//! While a sector erases (byte parallelism at 3.3 V: typically 2 s, at most
//! 4 s for 128 KiB, datasheet `tERASE128KB`) the CPU stalls on instruction
//! fetch; the watchdog period (8 s) covers it. The outbox opens a new sector
//! about once a day, so the stall is rare (README, "Limits").

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use stm32f4xx_hal::flash::{self, FlashExt, LockedFlash};

/// Start of the region, from the start of flash.
pub const REGION_START: u32 = 0x2_0000;
/// Sector size in the region.
pub const SECTOR_BYTES: u32 = 128 * 1024;
/// Sectors in the region.
pub const SECTORS: u32 = 3;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy)]
pub enum FlashError {
    /// Outside the region.
    OutOfBounds,
    /// Not on a sector boundary.
    NotAligned,
    /// The flash controller refused (the HAL's error).
    Controller(flash::Error),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::Controller(e) => e.kind(),
        }
    }
}

/// The outbox region of the internal flash.
pub struct OutboxFlash {
    flash: LockedFlash,
}

impl OutboxFlash {
    /// The region of `flash`; `None` if the chip's flash is too small for it
    /// (not an F411CE/F411RE with 512 KiB).
    pub fn new(flash: LockedFlash) -> Option<Self> {
        let end = (REGION_START + SECTORS * SECTOR_BYTES) as usize;
        (flash.len() >= end).then_some(OutboxFlash { flash })
    }

    fn check(&self, offset: u32, len: usize) -> Result<u32, FlashError> {
        let end = (offset as usize).checked_add(len);
        match end {
            Some(end) if end <= self.capacity() => Ok(REGION_START + offset),
            _ => Err(FlashError::OutOfBounds),
        }
    }
}

impl ErrorType for OutboxFlash {
    type Error = FlashError;
}

impl ReadNorFlash for OutboxFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let at = self.check(offset, bytes.len())? as usize;
        bytes.copy_from_slice(&self.flash.read()[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        (SECTORS * SECTOR_BYTES) as usize
    }
}

impl NorFlash for OutboxFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR_BYTES as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        if !from.is_multiple_of(SECTOR_BYTES) || !to.is_multiple_of(SECTOR_BYTES) || to < from {
            return Err(FlashError::NotAligned);
        }
        let start = self.check(from, (to - from) as usize)?;
        if to == from {
            return Ok(());
        }
        let mut unlocked = self.flash.unlocked();
        NorFlash::erase(&mut unlocked, start, start + (to - from)).map_err(FlashError::Controller)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let at = self.check(offset, bytes.len())? as usize;
        let mut unlocked = self.flash.unlocked();
        unlocked
            .program(at, bytes.iter())
            .map_err(FlashError::Controller)
    }
}
