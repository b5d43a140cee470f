//! Human-readable quantities for text output.

/// 1024-based sizes: "512", "64.0M", "1.5G".
pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut x = v as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 || x >= 100.0 {
        format!("{x:.0}{}", UNITS[u])
    } else {
        format!("{x:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(64 << 20), "64.0M");
        assert_eq!(bytes(1536 << 20), "1.5G");
    }
}
