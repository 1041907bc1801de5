//! Calendar windows in UTC: the minute, hour, day or month a moment falls in.

use crate::config::Per;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day count since 1970-01-01.
fn year_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// The window (start, end) in unix seconds that `now` falls in.
pub fn window(per: Per, now: u64) -> (u64, u64) {
    let step = |s: u64| {
        let start = now - now % s;
        (start, start + s)
    };
    match per {
        Per::Minute => step(60),
        Per::Hour => step(3_600),
        Per::Day => step(86_400),
        Per::Month => {
            let (y, m) = year_month((now / 86_400) as i64);
            let start = days_from_civil(y, m, 1);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1);
            ((start * 86_400) as u64, (end * 86_400) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_windows_in_utc() {
        // 2026-11-27T17:23:45Z
        let t = 1_795_800_225;
        assert_eq!(window(Per::Minute, t), (1_795_800_180, 1_795_800_240));
        assert_eq!(window(Per::Hour, t), (1_795_798_800, 1_795_802_400));
        // 2026-11-27T00:00:00Z .. 2026-11-28T00:00:00Z
        assert_eq!(window(Per::Day, t), (1_795_737_600, 1_795_824_000));
        // 2026-11-01 .. 2026-12-01, and December into the next year; February of a leap year
        assert_eq!(window(Per::Month, t), (1_793_491_200, 1_796_083_200));
        assert_eq!(
            window(Per::Month, 1_796_083_200),
            (1_796_083_200, 1_798_761_600)
        );
        let feb_2028 = days_from_civil(2028, 2, 10) as u64 * 86_400;
        let (s, e) = window(Per::Month, feb_2028);
        assert_eq!((e - s) / 86_400, 29);
    }
}
