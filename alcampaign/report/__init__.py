"""Campaign reports: collect (read the stores), plots (one function per plot), html."""
