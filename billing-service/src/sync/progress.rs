//! A progress bar per kind of object for `billing-service sync` on a terminal. Stripe's lists do
//! not say how long they are, so each bar counts up with its rate rather than filling. Nothing
//! is drawn when standard error is not a terminal (a Job's log, `--json`).

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::backfill::{Kind, Progress};
use crate::tables::sync_cursors::Tally;

pub struct Bars {
    bars: HashMap<Kind, ProgressBar>,
}

impl Bars {
    pub fn new(kinds: &[Kind]) -> Self {
        let all = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {prefix:<23} {human_pos:>9} listed  {msg:<22} {per_sec:>12}  {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = kinds
            .iter()
            .map(|kind| {
                let bar = all.add(ProgressBar::no_length().with_style(style.clone()));
                bar.set_prefix(kind.name());
                bar.set_message("waiting");
                (*kind, bar)
            })
            .collect();
        Self { bars }
    }

    fn show(&self, kind: Kind, total: &Tally, state: &str) {
        if let Some(bar) = self.bars.get(&kind) {
            bar.set_position(u64::try_from(total.listed).unwrap_or(0));
            bar.set_message(format!("{} written{state}", total.written));
        }
    }
}

impl Progress for Bars {
    fn started(&self, kind: Kind, so_far: &Tally) {
        if let Some(bar) = self.bars.get(&kind) {
            bar.reset_elapsed();
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
        }
        self.show(kind, so_far, "");
    }

    fn page(&self, kind: Kind, total: &Tally) {
        self.show(kind, total, "");
    }

    fn finished(&self, kind: Kind, total: &Tally) {
        self.show(kind, total, ", done");
        if let Some(bar) = self.bars.get(&kind) {
            bar.finish();
        }
    }
}
