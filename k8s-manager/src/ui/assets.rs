//! The page's files, built into the binary: no internet, no CDN, nothing to
//! install next to it. Plain HTML, CSS and JavaScript (`k8s-manager/ui/`),
//! with no build step.

/// A file of the page.
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

/// The file served at `path`, if one is.
pub fn find(path: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], _) = match path {
        "/" | "/index.html" => (
            include_bytes!("../../ui/index.html"),
            "text/html; charset=utf-8",
        ),
        "/app.js" => (
            include_bytes!("../../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/style.css" => (
            include_bytes!("../../ui/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_no_token_and_loads_only_its_own_files() {
        let html = std::str::from_utf8(find("/").unwrap().body).unwrap();
        assert!(html.contains("<script src=\"/app.js\""), "{html}");
        assert!(!html.contains("token="), "the token is never in the page");
        // Nothing from elsewhere: no CDN, no font service.
        for asset in ["/", "/app.js", "/style.css"] {
            let text = std::str::from_utf8(find(asset).unwrap().body).unwrap();
            assert!(!text.contains("https://"), "{asset} loads from elsewhere");
        }
        assert!(find("/../settings.json").is_none());
    }
}
