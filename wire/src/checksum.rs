//! Checksums of the project's records and frames, `no_std`, no dependency:
//! CRC-32 (IEEE 802.3, reflected, as zlib) for the firmware's flash outbox, its
//! saved totaliser state and the gateway's disk spool; CRC-16/MODBUS for
//! Modbus RTU frames. Without `std` (the firmware) the CRC-32 is nibble-table
//! driven (64 bytes of table), small enough for a microcontroller; with `std`
//! (the gateway's spool, where a profile of paced ingest showed the nibble
//! loop at ~2 % of all CPU) it reads eight bytes a step through eight
//! 256-entry tables (8 KiB, "slice-by-8"). Both give the same values.

const TABLE: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Eight 256-entry tables: `SLICE8[0]` is the byte-at-a-time table,
/// `SLICE8[k][i]` the CRC of byte `i` followed by `k` zero bytes.
#[cfg(feature = "std")]
static SLICE8: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
};

/// CRC-32 of `bytes` with the 64-byte nibble table: what the firmware runs
/// (the same values as [`crc32`]; here for tests and the benchmark's
/// baseline).
pub fn crc32_nibble_table(bytes: &[u8]) -> u32 {
    !update_nibbles(0xFFFF_FFFF, bytes)
}

/// Nibble-at-a-time update (the firmware's; the reference for slice-by-8).
fn update_nibbles(mut c: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0x0F) as usize] ^ (c >> 4);
        c = TABLE[((c ^ (u32::from(b) >> 4)) & 0x0F) as usize] ^ (c >> 4);
    }
    c
}

/// Eight-bytes-at-a-time update.
#[cfg(feature = "std")]
fn update_slice8(mut c: u32, bytes: &[u8]) -> u32 {
    let t = &SLICE8;
    let mut chunks = bytes.chunks_exact(8);
    for ch in &mut chunks {
        let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// A running CRC-32.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

impl Crc32 {
    /// A CRC over no bytes yet.
    pub const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(feature = "std")]
        {
            self.0 = update_slice8(self.0, bytes);
        }
        #[cfg(not(feature = "std"))]
        {
            self.0 = update_nibbles(self.0, bytes);
        }
    }

    /// The CRC of everything added.
    pub const fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

/// CRC-16/MODBUS of `bytes` (polynomial 0xA001 reflected, initial 0xFFFF),
/// sent low byte first at the end of a Modbus RTU frame.
pub fn crc16_modbus(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_catalogue_check_value() {
        // The CRC catalogue's check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[cfg(feature = "std")]
    proptest::proptest! {
        #[test]
        fn slice_by_8_agrees_with_the_firmwares_nibble_table(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            split in 0usize..200,
        ) {
            let reference = crc32_nibble_table(&bytes);
            proptest::prop_assert_eq!(crc32(&bytes), reference);
            // Any split of the input gives the same CRC.
            let at = split.min(bytes.len());
            let mut c = Crc32::new();
            c.update(&bytes[..at]);
            c.update(&bytes[at..]);
            proptest::prop_assert_eq!(c.finish(), reference);
        }
    }

    #[test]
    fn crc16_modbus_matches_the_catalogue_check_value() {
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        // A read-holding-registers request from the Modbus spec: 01 03 00 00 00 01 → 84 0A.
        assert_eq!(
            crc16_modbus(&[1, 3, 0, 0, 0, 1]).to_le_bytes(),
            [0x84, 0x0A]
        );
    }
}
