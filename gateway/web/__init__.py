"""What the admin web pages on a store's or central's machine share: the guard that keeps other
web pages away from an admin API (`guard`), and the page, its headers and its 401 form (`page`,
with the shared HTML, CSS and script in `static/`). The store's admin API (`gateway.admin`) and
the reference central's (`sync.central`) both use it; it knows neither."""
