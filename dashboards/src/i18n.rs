//! The one message catalogue: every word a page shows comes from
//! `locales/{es-CL,en}/main.ftl` (Project Fluent), compiled into the binary
//! with `include_str!`. Spanish (es-CL) is the default; English is
//! selectable. A message missing from English falls back to Spanish, and a
//! message missing from both prints its id (so a page never fails for want
//! of a word); the catalogue test makes both cases a test failure for every id
//! the code uses.
//!
//! Pages receive a [`Tr`] (language + catalogue) and format numbers and dates
//! through it too, so a template has one object to ask for any text.

use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset};
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use unic_langid::LanguageIdentifier;

use crate::format;

/// The Spanish catalogue (default).
pub const ES_CL_FTL: &str = include_str!("../locales/es-CL/main.ftl");
/// The English catalogue.
pub const EN_FTL: &str = include_str!("../locales/en/main.ftl");

/// A language the dashboards speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    /// Chilean Spanish, the default.
    #[default]
    EsCl,
    /// English.
    En,
}

impl Lang {
    /// Every language, the default first.
    pub const ALL: [Lang; 2] = [Lang::EsCl, Lang::En];

    /// The BCP 47 tag, for `<html lang>` and cookies: `es-CL`, `en`.
    pub const fn tag(self) -> &'static str {
        match self {
            Lang::EsCl => "es-CL",
            Lang::En => "en",
        }
    }

    /// The short code used in the language switch: `es`, `en`.
    pub const fn code(self) -> &'static str {
        match self {
            Lang::EsCl => "es",
            Lang::En => "en",
        }
    }

    /// Parses a code or tag (`es`, `es-CL`, `en`, `en-US`, any case);
    /// anything else is `None` (callers then use the default).
    pub fn parse(s: &str) -> Option<Lang> {
        let primary = s.split(['-', '_']).next()?.trim().to_ascii_lowercase();
        match primary.as_str() {
            "es" => Some(Lang::EsCl),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The first supported language of an `Accept-Language` header, else
    /// the default.
    pub fn from_accept_language(header: &str) -> Lang {
        header
            .split(',')
            .filter_map(|part| Lang::parse(part.split(';').next().unwrap_or("")))
            .next()
            .unwrap_or_default()
    }
}

type Bundle = FluentBundle<FluentResource>;

struct Catalogue {
    es: Bundle,
    en: Bundle,
}

fn bundle(tag: &str, source: &'static str) -> Bundle {
    let lang: LanguageIdentifier = tag.parse().expect("a valid language tag");
    let resource = FluentResource::try_new(source.to_string())
        .unwrap_or_else(|(_, errors)| panic!("locales/{tag}/main.ftl does not parse: {errors:?}"));
    let mut b = FluentBundle::new_concurrent(vec![lang]);
    // Unicode isolation marks around arguments would end up inside HTML
    // attributes and CSV cells; our arguments are plain numbers and names.
    b.set_use_isolating(false);
    b.add_resource(resource)
        .unwrap_or_else(|errors| panic!("locales/{tag}/main.ftl: duplicate ids {errors:?}"));
    b
}

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue {
        es: bundle("es-CL", ES_CL_FTL),
        en: bundle("en", EN_FTL),
    })
}

/// Whether `lang`'s own catalogue (no fallback) has message `id`.
pub fn has_message(lang: Lang, id: &str) -> bool {
    let c = catalogue();
    let b = match lang {
        Lang::EsCl => &c.es,
        Lang::En => &c.en,
    };
    b.get_message(id).and_then(|m| m.value()).is_some()
}

fn lookup(lang: Lang, id: &str, args: Option<&FluentArgs>) -> Option<String> {
    let c = catalogue();
    let order: &[&Bundle] = match lang {
        Lang::EsCl => &[&c.es],
        Lang::En => &[&c.en, &c.es],
    };
    for b in order {
        if let Some(pattern) = b.get_message(id).and_then(|m| m.value()) {
            let mut errors = Vec::new();
            return Some(b.format_pattern(pattern, args, &mut errors).into_owned());
        }
    }
    None
}

/// A translator: the language of one response, with the formatting helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tr {
    /// The language.
    pub lang: Lang,
}

impl Tr {
    /// A translator for `lang`.
    pub const fn new(lang: Lang) -> Tr {
        Tr { lang }
    }

    /// Message `id`.
    pub fn t(&self, id: impl AsRef<str>) -> String {
        let id = id.as_ref();
        lookup(self.lang, id, None).unwrap_or_else(|| id.to_string())
    }

    /// Message `id` with one argument (already formatted text).
    pub fn t1(&self, id: &str, name: &str, value: impl AsRef<str>) -> String {
        let mut args = FluentArgs::new();
        args.set(name, value.as_ref().to_string());
        lookup(self.lang, id, Some(&args)).unwrap_or_else(|| id.to_string())
    }

    /// Message `id` with two arguments (already formatted text).
    pub fn t2(
        &self,
        id: &str,
        n1: &str,
        v1: impl AsRef<str>,
        n2: &str,
        v2: impl AsRef<str>,
    ) -> String {
        let mut args = FluentArgs::new();
        args.set(n1, v1.as_ref().to_string());
        args.set(n2, v2.as_ref().to_string());
        lookup(self.lang, id, Some(&args)).unwrap_or_else(|| id.to_string())
    }

    /// Message `id` with any number of arguments (already formatted text).
    pub fn tn(&self, id: &str, args: &[(&str, String)]) -> String {
        let mut fa = FluentArgs::new();
        for (k, v) in args {
            fa.set(*k, v.clone());
        }
        lookup(self.lang, id, Some(&fa)).unwrap_or_else(|| id.to_string())
    }

    /// Message `{prefix}-{key}` for a code that comes from data (an alert
    /// kind, a reason code, a KPI name), or `fallback` when the catalogue
    /// has no such message (a code newer than this catalogue).
    pub fn code(&self, prefix: &str, key: impl AsRef<str>, fallback: impl AsRef<str>) -> String {
        let id = format!("{prefix}-{}", key.as_ref().replace('_', "-"));
        lookup(self.lang, &id, None).unwrap_or_else(|| fallback.as_ref().to_string())
    }

    /// An integer, `21.092`.
    pub fn int(&self, v: &i64) -> String {
        format::int(*v)
    }

    /// An unsigned count, `21.092`.
    pub fn count(&self, v: &u64) -> String {
        format::int(i64::try_from(*v).unwrap_or(i64::MAX))
    }

    /// A decimal number, `1.234,5`.
    pub fn dec(&self, v: &f64, decimals: usize) -> String {
        format::dec(*v, decimals)
    }

    /// An optional decimal; `—` when absent.
    pub fn opt(&self, v: &Option<f64>, decimals: usize) -> String {
        match v {
            Some(v) => format::dec(*v, decimals),
            None => "—".to_string(),
        }
    }

    /// Pesos, `$ 5.071.159.500`.
    pub fn clp(&self, v: &u64) -> String {
        format::clp(*v)
    }

    /// Local date and time, `dd-mm-yyyy HH:MM`.
    pub fn dt(&self, t: &DateTime<FixedOffset>) -> String {
        format::datetime(t)
    }

    /// An optional local date and time; `—` when absent.
    pub fn odt(&self, t: &Option<DateTime<FixedOffset>>) -> String {
        t.as_ref()
            .map(format::datetime)
            .unwrap_or_else(|| "—".to_string())
    }

    /// Local date, `dd-mm-yyyy`.
    pub fn date(&self, t: &DateTime<FixedOffset>) -> String {
        format::date(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spanish_is_the_default_language() {
        assert_eq!(Lang::default(), Lang::EsCl);
        assert_eq!(Tr::default().lang, Lang::EsCl);
        assert_eq!(Lang::from_accept_language("fr-FR, de;q=0.8"), Lang::EsCl);
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,es;q=0.8"),
            Lang::En
        );
    }

    #[test]
    fn english_falls_back_to_spanish_and_unknown_ids_print_themselves() {
        let en = Tr::new(Lang::En);
        assert_eq!(en.t("no-such-message"), "no-such-message");
        assert_eq!(
            en.code("alert-kind", "brand_new_kind", "brand_new_kind"),
            "brand_new_kind"
        );
        assert_eq!(Tr::new(Lang::EsCl).t("nav-logout"), "Cerrar sesión");
        assert_eq!(en.t("nav-logout"), "Log out");
    }

    #[test]
    fn arguments_are_inserted_without_isolation_marks() {
        let es = Tr::new(Lang::EsCl);
        let s = es.t1("alerts-count", "count", "3");
        assert!(s.contains('3'), "{s}");
        assert!(!s.contains('\u{2068}'), "isolation marks in {s:?}");
    }
}
