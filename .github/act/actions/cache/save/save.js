// actions/cache/save: the save phase of the actions/cache stub, in the main step.
process.env.ACT_CACHE_ONLY = "save";
require("../cache.js");
