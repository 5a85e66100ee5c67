//! The overview's charts: inline SVG written here, server-side, so the page
//! needs no script and no third-party code.
//!
//! The page's Content-Security-Policy is `style-src 'self'`, which blocks
//! `style` attributes and `<style>` elements inside an inline `<svg>` too
//! (CSP Level 3 §6.1.12); so every colour, stroke and size is an SVG
//! presentation attribute (`fill=`, `stroke=`, `font-size=`), which CSP
//! does not govern (SVG 2 §6.6). Each chart is `role="img"` with a
//! `<title>` and `<desc>` (WAI-ARIA Graphics, SVG-AAM §5); the page adds
//! the series as a table beside it.

use std::fmt::Write as _;

use crate::store::stats::{DayCount, DayLogins, LoginRoute};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 44.0;
/// Text and axes: #1f2933 on white is 14.7:1 (WCAG 2.2 1.4.3); the
/// series colours are at least 3:1 against white (1.4.11).
const INK: &str = "#1f2933";
const GRID: &str = "#d9dee3";
const BARS: &str = "#2563eb";
const LINE: &str = "#b45309";

/// One colour per route, in [`LoginRoute::ALL`]'s order.
pub const ROUTE_COLOURS: &[(&str, &str)] = &[
    ("local", "#2563eb"),
    ("upstream_password", "#047857"),
    ("upstream_redirect", "#b45309"),
    ("adopted_refresh", "#7c3aed"),
    ("reset_password", "#be123c"),
];

/// Text content escaped for XML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for an axis, and its tick step: 1, 2 or 5 × 10ⁿ.
pub fn nice_max(max: u64) -> (u64, u64) {
    if max == 0 {
        return (4, 1);
    }
    let rough = (max as f64 / 4.0).max(1.0);
    let magnitude = 10f64.powi(rough.log10().floor() as i32);
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude) as u64;
    let step = step.max(1);
    (max.div_ceil(step) * step, step)
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2026-12-06` → `6 Dec`.
fn short_day(day: &str) -> String {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map(|d| d.format("%-d %b").to_string())
        .unwrap_or_else(|_| day.to_string())
}

fn open(out: &mut String, id: &str, title: &str, desc: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc" font-family="system-ui, sans-serif" font-size="13" fill="{INK}"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#,
        esc(title),
        esc(desc)
    );
}

/// The left axis with its grid lines and unit.
fn y_axis(out: &mut String, max: u64, step: u64, unit: &str) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut v = 0;
    while v <= max {
        let y = TOP + plot_h - plot_h * v as f64 / max as f64;
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{GRID}" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            thousands(v)
        );
        v += step;
    }
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" text-anchor="start" font-weight="bold">{}</text>"#,
        TOP - 38.0,
        esc(unit)
    );
}

/// Day labels under the bars, about `labels` of them.
fn x_axis(out: &mut String, days: &[&str], labels: usize) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let n = days.len().max(1);
    let every = n.div_ceil(labels.max(1)).max(1);
    let base = HEIGHT - BOTTOM;
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" y1="{base}" x2="{:.1}" y2="{base}" stroke="{INK}" stroke-width="1"/>"#,
        WIDTH - RIGHT
    );
    for (i, day) in days.iter().enumerate() {
        // The last day (today) always gets its label.
        if !(n - 1 - i).is_multiple_of(every) {
            continue;
        }
        let x = LEFT + plot_w * (i as f64 + 0.5) / n as f64;
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{base}" x2="{x:.1}" y2="{:.1}" stroke="{INK}" stroke-width="1"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            base + 4.0,
            base + 18.0,
            esc(&short_day(day))
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Day (UTC)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
}

/// Users migrated per day (bars, left axis) and the share of users with an
/// upstream account migrated by each day's end (line, right axis, to 100 %).
/// `base` is that share's denominator (migrated + still to move).
pub fn migrated_chart(days: &[DayCount], base: u64) -> String {
    let mut out = String::new();
    let total: u64 = days.iter().map(|d| d.count).sum();
    let last = days.last().map_or(0, |d| d.cumulative);
    open(
        &mut out,
        "migrated",
        "Users migrated per day, and progress toward 100 %",
        &format!(
            "{} users migrated over the last {} days; {} of {} ({:.1} %) migrated in all.",
            thousands(total),
            days.len(),
            thousands(last),
            thousands(base),
            percent(last, base)
        ),
    );
    let (max, step) = nice_max(days.iter().map(|d| d.count).max().unwrap_or(0));
    y_axis(&mut out, max, step, "Users per day");
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = days.len().max(1) as f64;
    let slot = plot_w / n;
    for (i, d) in days.iter().enumerate() {
        let h = plot_h * d.count as f64 / max as f64;
        if h > 0.0 {
            let _ = write!(
                out,
                r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{h:.2}" fill="{BARS}"><title>{}: {}</title></rect>"#,
                LEFT + slot * i as f64 + slot * 0.1,
                TOP + plot_h - h,
                (slot * 0.8).max(0.5),
                esc(&d.day),
                thousands(d.count)
            );
        }
    }
    // The right axis: 0 to 100 %.
    for pct in [0, 25, 50, 75, 100] {
        let y = TOP + plot_h - plot_h * pct as f64 / 100.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="start" fill="{LINE}">{pct} %</text>"#,
            WIDTH - RIGHT + 6.0,
            y + 4.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-weight="bold" fill="{LINE}">Migrated in all (%)</text>"#,
        WIDTH - RIGHT + 40.0,
        TOP - 38.0
    );
    let points: Vec<String> = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "{:.2},{:.2}",
                LEFT + slot * (i as f64 + 0.5),
                TOP + plot_h - plot_h * percent(d.cumulative, base) / 100.0
            )
        })
        .collect();
    let _ = write!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{LINE}" stroke-width="2.5"/>"#,
        points.join(" ")
    );
    let names: Vec<&str> = days.iter().map(|d| d.day.as_str()).collect();
    x_axis(&mut out, &names, 6);
    out.push_str("</svg>");
    out
}

/// Successful logins per day, stacked by route, with a legend.
pub fn logins_chart(days: &[DayLogins]) -> String {
    let mut out = String::new();
    let total: u64 = days.iter().flat_map(|d| d.by_route.values()).sum();
    open(
        &mut out,
        "logins",
        "Successful logins per day by route",
        &format!(
            "{} logins over the last {} days, stacked by route: {}.",
            thousands(total),
            days.len(),
            ROUTE_COLOURS
                .iter()
                .map(|(r, _)| {
                    let n: u64 = days.iter().filter_map(|d| d.by_route.get(*r)).sum();
                    format!("{} {}", route_name(r), thousands(n))
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let day_max = days
        .iter()
        .map(|d| d.by_route.values().sum::<u64>())
        .max()
        .unwrap_or(0);
    let (max, step) = nice_max(day_max);
    y_axis(&mut out, max, step, "Logins per day");
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / days.len().max(1) as f64;
    for (i, d) in days.iter().enumerate() {
        let mut y = TOP + plot_h;
        for (route, colour) in ROUTE_COLOURS {
            let n = d.by_route.get(*route).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = plot_h * n as f64 / max as f64;
            y -= h;
            let _ = write!(
                out,
                r#"<rect x="{:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="{colour}"><title>{}, {}: {}</title></rect>"#,
                LEFT + slot * i as f64 + slot * 0.15,
                slot * 0.7,
                esc(&d.day),
                route_name(route),
                thousands(n)
            );
        }
    }
    // The legend: its own row between the unit and the plot.
    let mut x = LEFT;
    for (route, colour) in ROUTE_COLOURS {
        let name = route_name(route);
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            TOP - 27.0,
            x + 14.0,
            TOP - 18.0,
            esc(name)
        );
        x += 14.0 + name.len() as f64 * 7.4 + 16.0;
    }
    let names: Vec<&str> = days.iter().map(|d| d.day.as_str()).collect();
    x_axis(&mut out, &names, 7);
    out.push_str("</svg>");
    out
}

/// A route as people read it.
pub fn route_name(route: &str) -> &'static str {
    match LoginRoute::parse(route) {
        Some(LoginRoute::Local) => "Local",
        Some(LoginRoute::UpstreamPassword) => "Upstream password",
        Some(LoginRoute::UpstreamRedirect) => "Upstream redirect",
        Some(LoginRoute::AdoptedRefresh) => "Adopted refresh",
        Some(LoginRoute::ResetPassword) => "Password reset",
        None => "Unknown",
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_max(0), (4, 1));
        assert_eq!(nice_max(7), (8, 2));
        assert_eq!(nice_max(95), (100, 50));
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn charts_use_no_style_attribute() {
        let days = vec![DayCount {
            day: "2026-12-06".into(),
            count: 3,
            cumulative: 3,
        }];
        let svg = migrated_chart(&days, 10);
        assert!(!svg.contains("style="));
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains("<title"));
    }
}
