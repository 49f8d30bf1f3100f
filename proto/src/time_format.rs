//! Envoy's `%START_TIME(FORMAT)%`: a `strftime` format in UTC, with
//! Envoy's additions for sub-second time (`%f`, `%3f`, ... `%9f`, and
//! `%s`, seconds since the epoch). weft-control parses a format with
//! [`parse`] to refuse one the agent cannot write (naming the
//! conversion), and the agent parses it again and writes times with
//! [`write`]. Names of days and months are the C locale's, as Envoy's.

use std::time::Duration;

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    /// `%Y`: the year, at least four digits.
    Year,
    /// `%C`: the century (two digits).
    Century,
    /// `%y`: the year's last two digits.
    YearOfCentury,
    /// `%m`: 01-12.
    Month,
    /// `%d`: 01-31.
    Day,
    /// `%e`: the day, space-padded.
    DaySpaced,
    /// `%j`: 001-366.
    DayOfYear,
    /// `%H`: 00-23.
    Hour,
    /// `%I`: 01-12.
    Hour12,
    /// `%M`: 00-59.
    Minute,
    /// `%S`: 00-60.
    Second,
    /// `%p`: `AM` or `PM`.
    AmPm,
    /// `%a`, `%A`: the weekday's name, short or full.
    Weekday {
        full: bool,
    },
    /// `%b` (`%h`), `%B`: the month's name, short or full.
    MonthName {
        full: bool,
    },
    /// `%u`: 1 (Monday) to 7.
    WeekdayFromMonday,
    /// `%w`: 0 (Sunday) to 6.
    WeekdayFromSunday,
    /// `%z`: `+0000` (times are written in UTC).
    Offset,
    /// `%Z`: `UTC`.
    Zone,
    /// `%s`: whole seconds since the epoch.
    EpochSeconds,
    /// `%f` (9 digits) or `%1f` ... `%9f`: the fraction of the second,
    /// cut (not rounded) to that many digits.
    Fraction(u8),
    /// `%E<n>S`: the seconds with `n` digits of their fraction (`%E0S`
    /// is `%S`).
    SecondsWithFraction(u8),
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Parses `format`. The error names the conversion weft does not write
/// and its position (0-based, in characters) within the format.
pub fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    // Each character with its position, in characters.
    let mut chars = format.chars().enumerate().peekable();
    let flush = |literal: &mut String, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(literal)));
        }
    };
    while let Some((position, c)) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let Some((_, conversion)) = chars.next() else {
            return Err(format!(
                "position {position}: the format ends in a lone `%` (write `%%` for a `%`)"
            ));
        };
        // Conversions that are others' shorthands, and literal ones.
        let expanded = match conversion {
            '%' => Some("%"),
            'n' => Some("\n"),
            't' => Some("\t"),
            _ => None,
        };
        if let Some(text) = expanded {
            literal.push_str(text);
            continue;
        }
        let shorthand = match conversion {
            'T' | 'X' => Some("%H:%M:%S"),
            'F' => Some("%Y-%m-%d"),
            'D' | 'x' => Some("%m/%d/%y"),
            'R' => Some("%H:%M"),
            'r' => Some("%I:%M:%S %p"),
            'c' => Some("%a %b %e %H:%M:%S %Y"),
            _ => None,
        };
        if let Some(shorthand) = shorthand {
            flush(&mut literal, &mut pieces);
            pieces.extend(parse(shorthand).expect("the shorthands parse"));
            continue;
        }
        let piece = match conversion {
            'Y' => Piece::Year,
            'C' => Piece::Century,
            'y' => Piece::YearOfCentury,
            'm' => Piece::Month,
            'd' => Piece::Day,
            'e' => Piece::DaySpaced,
            'j' => Piece::DayOfYear,
            'H' => Piece::Hour,
            'I' => Piece::Hour12,
            'M' => Piece::Minute,
            'S' => Piece::Second,
            'p' => Piece::AmPm,
            'a' => Piece::Weekday { full: false },
            'A' => Piece::Weekday { full: true },
            'b' | 'h' => Piece::MonthName { full: false },
            'B' => Piece::MonthName { full: true },
            'u' => Piece::WeekdayFromMonday,
            'w' => Piece::WeekdayFromSunday,
            'z' => Piece::Offset,
            'Z' => Piece::Zone,
            's' => Piece::EpochSeconds,
            'f' => Piece::Fraction(9),
            digit @ '1'..='9' if chars.peek().map(|(_, c)| *c) == Some('f') => {
                chars.next();
                Piece::Fraction(digit as u8 - b'0')
            }
            'E' => {
                let digits = chars.next().map(|(_, c)| c);
                let seconds = chars.next().map(|(_, c)| c);
                match (digits, seconds) {
                    (Some(digit @ '0'..='9'), Some('S')) => {
                        Piece::SecondsWithFraction(digit as u8 - b'0')
                    }
                    _ => {
                        return Err(format!(
                            "position {position}: weft writes `%E` only as `%E<digit>S` (seconds with that many digits of their fraction)"
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "position {position}: `%{other}` is not a time conversion weft writes (it writes %Y %C %y %m %d %e %j %H %I %M %S %p %a %A %b %h %B %u %w %z %Z %s %f %1f-%9f %E<n>S %T %F %D %R %r %c %x %X %n %t %%)"
                ));
            }
        };
        flush(&mut literal, &mut pieces);
        pieces.push(piece);
    }
    flush(&mut literal, &mut pieces);
    Ok(pieces)
}

/// Writes the time `since_epoch` (UTC) as `pieces` say.
pub fn write(pieces: &[Piece], since_epoch: Duration, out: &mut Vec<u8>) {
    let secs = since_epoch.as_secs();
    let nanos = since_epoch.subsec_nanos();
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (rest / 3600, rest / 60 % 60, rest % 60);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    // Digits written in place: a line is written per logged request, and
    // a `String` per conversion would be an allocation each.
    let number = |out: &mut Vec<u8>, value: u64, width: usize, pad: u8| {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for _ in digits.len() - at..width {
            out.push(pad);
        }
        out.extend_from_slice(&digits[at..]);
    };
    // The first `digits` of the nanoseconds' nine, cut.
    let fraction = |out: &mut Vec<u8>, digits: u8| {
        let cut = nanos / 10u32.pow(9 - u32::from(digits));
        number(out, cut.into(), usize::from(digits), b'0');
    };
    for piece in pieces {
        match piece {
            Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Piece::Year => number(out, year.max(0) as u64, 4, b'0'),
            Piece::Century => number(out, year.max(0) as u64 / 100, 2, b'0'),
            Piece::YearOfCentury => number(out, year.max(0) as u64 % 100, 2, b'0'),
            Piece::Month => number(out, month.into(), 2, b'0'),
            Piece::Day => number(out, day.into(), 2, b'0'),
            Piece::DaySpaced => number(out, day.into(), 2, b' '),
            Piece::DayOfYear => {
                let january_first = days_from_civil(year, 1, 1);
                number(out, (days - january_first + 1) as u64, 3, b'0');
            }
            Piece::Hour => number(out, hour, 2, b'0'),
            Piece::Hour12 => number(out, (hour + 11) % 12 + 1, 2, b'0'),
            Piece::Minute => number(out, minute, 2, b'0'),
            Piece::Second => number(out, second, 2, b'0'),
            Piece::AmPm => out.extend_from_slice(if hour < 12 { b"AM" } else { b"PM" }),
            Piece::Weekday { full } => {
                let name = WEEKDAYS[weekday];
                out.extend_from_slice(if *full { name } else { &name[..3] }.as_bytes());
            }
            Piece::MonthName { full } => {
                let name = MONTHS[month as usize - 1];
                out.extend_from_slice(if *full { name } else { &name[..3] }.as_bytes());
            }
            Piece::WeekdayFromMonday => number(out, ((weekday + 6) % 7 + 1) as u64, 1, b'0'),
            Piece::WeekdayFromSunday => number(out, weekday as u64, 1, b'0'),
            Piece::Offset => out.extend_from_slice(b"+0000"),
            Piece::Zone => out.extend_from_slice(b"UTC"),
            Piece::EpochSeconds => number(out, secs, 1, b'0'),
            Piece::Fraction(digits) => fraction(out, *digits),
            Piece::SecondsWithFraction(digits) => {
                number(out, second, 2, b'0');
                if *digits > 0 {
                    out.push(b'.');
                    fraction(out, *digits);
                }
            }
        }
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year,
/// month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse: (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(format: &str, since_epoch: Duration) -> String {
        let mut out = Vec::new();
        write(&parse(format).unwrap(), since_epoch, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn envoys_examples_and_the_conversions_are_written_in_utc() {
        // 2017-01-01T00:00:00Z, Envoy's documented example.
        let new_year = Duration::from_secs(1_483_228_800);
        assert_eq!(
            written("%Y/%m/%dT%H:%M:%S%z %s", new_year),
            "2017/01/01T00:00:00+0000 1483228800"
        );
        // 2026-12-06T21:07:09.123456789Z, a Sunday, day 340.
        let t = Duration::new(1_796_591_229, 123_456_789);
        assert_eq!(written("%s.%3f", t), "1796591229.123");
        assert_eq!(written("%s%6f", t), "1796591229123456");
        assert_eq!(written("%f|%1f|%9f", t), "123456789|1|123456789");
        assert_eq!(written("%FT%T.%3fZ", t), "2026-12-06T21:07:09.123Z");
        assert_eq!(written("%E3S|%E0S", t), "09.123|09");
        assert_eq!(
            written("%a %A %b %h %B %e %j %u %w %C %y %Z", t),
            "Sun Sunday Dec Dec December  6 340 7 0 20 26 UTC"
        );
        assert_eq!(written("%I:%M %p|%r|%R", t), "09:07 PM|09:07:09 PM|21:07");
        assert_eq!(written("%c", t), "Sun Dec  6 21:07:09 2026");
        assert_eq!(written("%D|%x|%X", t), "12/06/26|12/06/26|21:07:09");
        assert_eq!(written("100%% at%n%t", t), "100% at\n\t");
        // Midnight and noon on the 12-hour clock; a leap day.
        let leap = Duration::from_secs(1_709_164_800);
        assert_eq!(written("%F %I %p %j", leap), "2024-02-29 12 AM 060");
        assert_eq!(
            written("%I %p", leap + Duration::from_secs(12 * 3600)),
            "12 PM"
        );
    }

    #[test]
    fn a_conversion_weft_does_not_write_is_named_with_its_position() {
        for (format, wanted) in [
            ("%Y-%q", "position 3: `%q`"),
            ("%G", "position 0: `%G`"),
            ("ab%", "position 2: the format ends in a lone `%`"),
            ("%E*S", "position 0: weft writes `%E` only as"),
            ("%0f", "`%0`"),
        ] {
            let err = parse(format).unwrap_err();
            assert!(err.contains(wanted), "{format}: {err}");
        }
    }

    #[test]
    fn days_and_dates_convert_both_ways() {
        for days in [-719_468, -1, 0, 59, 365, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
