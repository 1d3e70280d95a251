// The component's entry (what `hestia plugin build` gives componentize-js): the host's
// imports for the SDK, and the plugin's exports in the scope-policy world's shape.
import * as host from "hestia:plugin/host@0.4.0";
import { connectHost, exportScopePolicy } from "./hestia-sdk/index.js";
import plugin from "./plugin.js";

connectHost(host);
export const { grant, authorize } = exportScopePolicy(plugin);
