//! The admin page: users and tokens, devices and credentials, the APR
//! registry, threshold overrides and intervention records.

use askama::Template;

use super::{html, Frame};
use crate::i18n::Tr;
use crate::model::{AdminPage, Component, Layout, Role};

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a AdminPage,
    roles: Vec<(&'static str, String)>,
    components: Vec<(&'static str, String)>,
}

/// The admin page: tables with per-row POST actions and create forms.
pub fn render_admin(layout: &Layout, page: &AdminPage) -> String {
    let t = Tr::new(layout.lang);
    html(&AdminTpl {
        f: Frame::new(layout),
        t,
        p: page,
        roles: Role::ALL
            .iter()
            .map(|r| (r.as_str(), t.t(r.message_id())))
            .collect(),
        components: Component::ALL
            .iter()
            .map(|c| (c.as_str(), t.t(c.message_id())))
            .collect(),
    })
}
