-- FHIR read: GET the URL given to wrk with `Authorization: Bearer $TOKEN`.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
require "common"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("TOKEN"), "set TOKEN")
wrk.headers["Accept"] = "application/fhir+json"
done = report
