//! The totaliser's saved state in the RTC backup registers.
//!
//! The STM32F411 keeps 20 backup registers (80 bytes) in its backup domain:
//! they survive every reset (watchdog, brown-out, a flash update) and, with a
//! CR2032 on the Black Pill's VBAT pin, a power cut; writing them wears
//! nothing, so the total is saved at every site reading (10 s) instead of
//! once a report. Two slots of [`SAVED_STATE_LEN`] bytes are written
//! alternately, so a reset in the middle of a save leaves the other slot
//! whole; each carries its own CRC (the core's format), and on restore the
//! valid slot with the larger total wins (a total only grows).

use apr_firmware::flow::{KFactor, Totaliser, SAVED_STATE_LEN};
use stm32f4xx_hal::pac::{PWR, RCC, RTC};

const WORDS: usize = SAVED_STATE_LEN.div_ceil(4);
const SLOTS: [usize; 2] = [0, WORDS];

/// The backup registers, writable.
pub struct BackupTotal {
    rtc: RTC,
    next_slot: usize,
}

impl BackupTotal {
    /// Opens the backup domain for writing (PWR clock on, DBP set). Call
    /// before the RCC is frozen by the HAL.
    pub fn new(rtc: RTC, rcc: &RCC, pwr: &PWR) -> Self {
        rcc.apb1enr().modify(|_, w| w.pwren().set_bit());
        pwr.cr().modify(|_, w| w.dbp().set_bit());
        BackupTotal { rtc, next_slot: 0 }
    }

    fn slot(&self, slot: usize) -> [u8; SAVED_STATE_LEN] {
        let mut out = [0u8; SAVED_STATE_LEN];
        for (i, chunk) in out.chunks_mut(4).enumerate() {
            let word = self.rtc.bkpr(SLOTS[slot] + i).read().bkp().bits();
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        out
    }

    /// The saved totaliser, if either slot checks out.
    pub fn restore(&mut self, k: KFactor) -> Option<Totaliser> {
        let mut best: Option<(usize, Totaliser)> = None;
        for slot in 0..SLOTS.len() {
            if let Ok(t) = Totaliser::restore(&self.slot(slot), k) {
                if best.is_none_or(|(_, b)| t.microlitres() > b.microlitres()) {
                    best = Some((slot, t));
                }
            }
        }
        let (slot, t) = best?;
        self.next_slot = (slot + 1) % SLOTS.len();
        Some(t)
    }

    /// Saves `total` into the slot not written last.
    pub fn save(&mut self, total: &Totaliser) {
        let state = total.save();
        let base = SLOTS[self.next_slot];
        for (i, chunk) in state.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            let v = u32::from_le_bytes(word);
            self.rtc.bkpr(base + i).write(|w| w.bkp().set(v));
        }
        self.next_slot = (self.next_slot + 1) % SLOTS.len();
    }
}
