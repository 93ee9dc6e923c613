//! The admin console (layer 4): the virtual `pgsluice` database with SHOW/RELOAD/PAUSE. Placeholder
//! until the operations issue.
