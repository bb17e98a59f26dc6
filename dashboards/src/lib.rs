//! APR dashboards: the view layer of the web UI, for operators, engineers,
//! GORE reviewers and admins. View models in, HTML (and CSV/EPANET) out; no
//! HTTP, no store, no sessions: the server fills the view models from its
//! store and auth, calls the renderers from its handlers, and owns routing,
//! cookies and CSRF checking. This crate only promises that every POST form
//! carries the token it is given.
//!
//! # Choices
//! - **askama** for templates: they are files under `templates/`, compiled
//!   into Rust at build time (a typo in a field is a compile error, not a
//!   blank on a phone), HTML-escaped by default (`|safe` only for our own
//!   SVG and stylesheet), and written as HTML that a designer can read. maud
//!   escapes too, but puts markup in Rust macros; askama keeps the pages
//!   reviewable as pages and adds one small runtime crate.
//! - **Fluent** (`fluent-bundle`) for the one message catalogue, es-CL by
//!   default, English selectable (see [`i18n`]).
//! - **Charts are ours** ([`chart`]): a few hundred lines of SVG writing with
//!   min/max downsampling, instead of a plotting crate with font and raster
//!   dependencies; a chart is a few KB and needs no script.
//! - **Chilean formatting** ([`format`]) everywhere: `21.092`, `0,35`,
//!   `$ 5.071.159.500`, `dd-mm-yyyy HH:MM`; local times arrive converted.
//! - Pages are mobile-first (usable at 360 px), under 100 KB with realistic
//!   data (tested with the 56-APR fleet), and use no script except the
//!   operator's < 2 KB live alert refresh (server-sent events).
//!
//! # Layout
//! | path | what |
//! | --- | --- |
//! | `src/model.rs` | view models: what each page needs |
//! | `src/pages/` | renderers, one pure function per page (`render_*`) |
//! | `src/chart.rs` | SVG time-series charts, ticks, gaps, downsampling |
//! | `src/export.rs` | CSV (RFC 4180) of series and KPIs; EPANET `[PATTERNS]` |
//! | `src/format.rs` | Chilean numbers, pesos and dates |
//! | `src/i18n.rs` | the Fluent catalogue and the translator [`Tr`] |
//! | `templates/` | askama templates (`base.html` is the layout) |
//! | `locales/{es-CL,en}/main.ftl` | the message catalogue |
//! | `static/app.css` | the stylesheet ([`STYLESHEET`]), print rules included |
//! | `benches/chart.rs` | a year of 1-minute data into an 800-px chart |

#![deny(missing_docs)]

pub mod chart;
pub mod export;
pub mod format;
pub mod i18n;
pub mod model;
pub mod pages;

pub use i18n::{Lang, Tr};
pub use model::*;
pub use pages::{
    render_admin, render_alert_list, render_engineer_apr, render_engineer_overview, render_error,
    render_error_plain, render_gore, render_gore_report, render_login, render_operator,
};

/// The stylesheet. Pages inline it unless [`Layout::stylesheet_href`] names
/// where the server serves it (at [`paths::STYLESHEET`], with a long cache
/// lifetime).
pub const STYLESHEET: &str = include_str!("../static/app.css");

/// The fixed paths the pages link to; the server mounts its handlers there.
/// Everything else (form actions, per-APR links, exports) comes in the view
/// models.
pub mod paths {
    /// Login form (GET shows it, POST signs in).
    pub const LOGIN: &str = "/login";
    /// Logout (POST).
    pub const LOGOUT: &str = "/logout";
    /// Language switch (POST `lang` = `es` | `en`, `next` = where to return).
    pub const LANGUAGE: &str = "/idioma";
    /// Operator's home.
    pub const OPERATOR: &str = "/operador";
    /// Engineer's home (every APR).
    pub const ENGINEER: &str = "/ingenieria";
    /// GORE page.
    pub const GORE: &str = "/gore";
    /// Admin page.
    pub const ADMIN: &str = "/admin";
    /// The stylesheet as a cached asset.
    pub const STYLESHEET: &str = "/static/app.css";
}
