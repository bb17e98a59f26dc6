//! Checksums of the project's records and frames, `no_std`, no dependency:
//! CRC-32 (IEEE 802.3, reflected, as zlib) for the firmware's flash outbox, its
//! saved totaliser state and the gateway's disk spool; CRC-16/MODBUS for
//! Modbus RTU frames. The CRC-32 is nibble-table driven (64 bytes of table),
//! small enough for a microcontroller.

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
        let mut c = self.0;
        for &b in bytes {
            c = TABLE[((c ^ u32::from(b)) & 0x0F) as usize] ^ (c >> 4);
            c = TABLE[((c ^ (u32::from(b) >> 4)) & 0x0F) as usize] ^ (c >> 4);
        }
        self.0 = c;
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
