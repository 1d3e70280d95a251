-- OAuth2 client_credentials token request with client_secret_basic.
-- env BASIC: base64 of client_id:client_secret; env BODY: the form body.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
require "common"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. assert(os.getenv("BASIC"), "set BASIC")
wrk.body = assert(os.getenv("BODY"), "set BODY")
done = report
