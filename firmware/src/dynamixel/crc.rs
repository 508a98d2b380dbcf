//! Dynamixel 2.0 CRC-16: polynomial 0x8005, init 0, not reflected, no final xor
//! (CRC-16/UMTS, also called BUYPASS). Table-driven, `const`-built.

const fn make_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut b = 0;
        while b < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
            b += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static TABLE: [u16; 256] = make_table();

/// Continue a CRC over `data`.
#[inline]
pub fn update(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        let idx = ((crc >> 8) as u8 ^ b) as usize;
        crc = (crc << 8) ^ TABLE[idx];
    }
    crc
}

/// CRC of `data` from the initial value 0.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    update(0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc16(b"123456789"), 0xFEE8);
    }
}
