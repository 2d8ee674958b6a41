"""Views that belong to one page each: what a page needs beyond its own file (widgets that keep
state, layout of one section). Widgets shared by several pages stay in ``dashboard.widgets``."""
