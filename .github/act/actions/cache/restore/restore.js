// actions/cache/restore: the restore phase of the actions/cache stub, in the main step.
process.env.ACT_CACHE_ONLY = "restore";
require("../cache.js");
