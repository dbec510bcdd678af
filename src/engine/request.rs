//! The request as the engine sees it: a borrowed view the host fills from Envoy's headers.

/// Header names are lowercase (Envoy's header maps are); `path` is `:path`, query included.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    /// Downstream peer address (`ip:port`), for `client_ip` rate-limit keys.
    pub peer: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// Every value of header `name` (lowercase), in order.
    pub fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(k, _)| k.as_str() == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without query string or fragment.
    pub fn path_only(&self) -> &'a str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        self.path.get(..end).unwrap_or(self.path)
    }
}
