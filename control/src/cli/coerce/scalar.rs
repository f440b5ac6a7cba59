//! QEMU's string-to-scalar conversions for keyval values: `qapi_bool_parse`,
//! `qemu_strtoi64`/`qemu_strtou64` (base 0) and `qemu_strtosz`.  Each
//! returns `None` for anything QEMU would reject, so callers can attach the
//! parameter name to the error.

/// `on/yes/true/y` and `off/no/false/n`, case-sensitive like QEMU.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "on" | "yes" | "true" | "y" => Some(true),
        "off" | "no" | "false" | "n" => Some(false),
        _ => None,
    }
}

/// C `strtoll(s, NULL, 0)` without its silent truncation: optional leading
/// whitespace and sign, then `0x` hex, leading-`0` octal or decimal, and
/// nothing after the digits.
pub fn parse_int(s: &str) -> Option<i64> {
    let (negative, digits) = split_sign(s)?;
    let magnitude = parse_magnitude(digits)?;
    if negative {
        // i64::MIN has no positive counterpart, so negate in i128.
        i64::try_from(-i128::from(magnitude)).ok()
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Like [`parse_int`] for unsigned values.  Unlike C `strtoull`, a minus
/// sign is rejected rather than wrapped around: `-1` meaning 2^64-1 only
/// ever hides mistakes.
pub fn parse_uint(s: &str) -> Option<u64> {
    match split_sign(s)? {
        (false, digits) => parse_magnitude(digits),
        (true, _) => None,
    }
}

/// `qemu_strtosz`: a non-negative decimal with optional fraction, or `0x`
/// hex (no fraction, no suffix), followed by an optional one-letter suffix
/// `B`, `K`, `M`, `G`, `T`, `P`, `E` (powers of 1024, case-insensitive).
/// A fraction needs a suffix bigger than `B` unless it is zero; the result
/// rounds half up.  `1.5k` = 1536, `1kB` is rejected.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim_start_matches(is_c_space);
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }

    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int_part, rest) = s.split_at(int_end);
    let (frac_part, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            r.split_at(end)
        }
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mul: u64 = match rest {
        "" => 1,
        _ if rest.len() == 1 => suffix_multiplier(rest.chars().next()?)?,
        _ => return None,
    };

    let int_val: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let mut total = int_val.checked_mul(u128::from(mul))?;
    if frac_part.bytes().any(|b| b != b'0') {
        if mul == 1 {
            // Fractional bytes make no sense.
            return None;
        }
        // 19 digits keep the arithmetic inside u128 and are far more
        // precise than any size needs.
        let digits = &frac_part[..frac_part.len().min(19)];
        let numerator: u128 = digits.parse().ok()?;
        let denominator = 10u128.checked_pow(u32::try_from(digits.len()).ok()?)?;
        let scaled = numerator.checked_mul(u128::from(mul))?;
        // Round half up, as QEMU does.
        total = total.checked_add((scaled + denominator / 2) / denominator)?;
    }
    u64::try_from(total).ok()
}

fn suffix_multiplier(c: char) -> Option<u64> {
    let shift = match c.to_ascii_lowercase() {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        't' => 40,
        'p' => 50,
        'e' => 60,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// C `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Skip leading whitespace and split off a sign.
fn split_sign(s: &str) -> Option<(bool, &str)> {
    let s = s.trim_start_matches(is_c_space);
    if let Some(rest) = s.strip_prefix('-') {
        Some((true, rest))
    } else {
        Some((false, s.strip_prefix('+').unwrap_or(s)))
    }
}

/// Digits after the sign, with `strtol` base-0 prefix rules.
fn parse_magnitude(digits: &str) -> Option<u64> {
    let (radix, body) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    // from_str_radix would accept a sign here; the sign was already taken.
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(body, radix).ok()
}
