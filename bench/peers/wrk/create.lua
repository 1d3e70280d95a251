-- FHIR create: POST the Patient in $BODY_FILE to the URL given to wrk, with `Authorization: Bearer $TOKEN`.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
require "common"
local f = assert(io.open(assert(os.getenv("BODY_FILE"), "set BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Accept"] = "application/fhir+json"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("TOKEN"), "set TOKEN")
done = report
