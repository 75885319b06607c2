-- deis: routing for the proxy role's nginx, without reloads.
--
-- The agent renders every routing databag into one routes text and PUTs it
-- on the control socket; it lands in the shared dict deis_routes, which
-- every worker (and the workers of a reloaded config) reads. A request looks
-- its Host up there, and the balancer picks one of the formation's
-- upstreams. The text, one record a line:
--
--   version <hash>
--   formation <name> [<ip:port> ...]
--   body <formation> <bytes>        (the formation's request body limit)
--   domain <domain> <formation>
--   release <formation> <version>   (the release its upstreams run)
--   https <formation> <redirect 0|1> <hsts max-age, 0: none>
--   acme <formation> <token> <key authorization>
--
-- The https and acme lines are read by parse_https (the HTTPS block at the
-- end of this file), which also serves certificates by SNI.
--
-- A formation without a body line has the default limit the agent passes
-- to init. A request over the limit gets 413: at once when its
-- Content-Length says so; a chunked body is read in a @body_N location,
-- where nginx stops at N (the limit rounded up to a power of two), and is
-- then measured.
--
-- Requests are never replayed on a second container once it may have
-- seen them: idempotent methods go to the upstream deis_apps (keep-alive
-- connections, retried on the next container); POST, PATCH and LOCK go
-- to deis_apps_once (a new connection each time; nginx tries the next
-- container only when nothing was sent: the config never lets nginx
-- resend them); any other method goes there too and is tried once.
--
-- The agent validated every value; parse still refuses a text it does not
-- understand, so a broken text never replaces a good one.

local M = {}

local dict = ngx.shared.deis_routes
local balancer -- ngx.balancer, loaded on first use
local default_body = 10485760 -- set by init
local ceiling = 1073741824 -- the largest limit and the last @body_N; set by init

-- Methods that may be sent again (RFC 9110, 9.2.2).
local idempotent = { GET = true, HEAD = true, OPTIONS = true, TRACE = true, PUT = true, DELETE = true }
-- Non-idempotent methods that nginx itself never resends once sent.
local guarded = { POST = true, PATCH = true, LOCK = true }

-- Each worker keeps the parsed routes of the last version it saw.
local cache = { version = nil, hosts = {}, forms = {}, body = {}, release = {}, https = {}, acme = {} }
-- Round-robin position per formation, per worker.
local rr = {}

-- parse turns a routes text into lookup tables, or returns nil and why.
local parse_https -- the HTTPS block, below

local function parse(text)
    local t = { hosts = {}, forms = {}, body = {}, release = {}, https = {}, acme = {} }
    local n = 0
    for line in string.gmatch(text, "[^\n]+") do
        n = n + 1
        local f = {}
        for w in string.gmatch(line, "%S+") do
            f[#f + 1] = w
        end
        local kind = f[1]
        if kind == nil or string.sub(kind, 1, 1) == "#" then
            -- blank line or comment
        elseif kind == "version" and #f == 2 then
            t.version = f[2]
        elseif kind == "formation" and #f >= 2 then
            local peers = {}
            for i = 3, #f do
                local host, port = string.match(f[i], "^(.+):(%d+)$")
                port = tonumber(port)
                if not host or not port or port < 1 or port > 65535 then
                    return nil, "line " .. n .. ": bad upstream " .. f[i]
                end
                peers[#peers + 1] = { host, port }
            end
            t.forms[f[2]] = peers
        elseif kind == "body" and #f == 3 then
            local v = tonumber(f[3])
            if not v or v < 1 or v ~= math.floor(v) then
                return nil, "line " .. n .. ": bad body limit " .. f[3]
            end
            t.body[f[2]] = v
        elseif kind == "domain" and #f == 3 then
            t.hosts[f[2]] = f[3]
        elseif kind == "release" and #f == 3 and string.match(f[3], "^%d+$") then
            t.release[f[2]] = f[3]
        elseif kind == "https" or kind == "acme" then
            local err = parse_https(t, f)
            if err then
                return nil, "line " .. n .. ": " .. err
            end
        else
            return nil, "line " .. n .. ": cannot read " .. line
        end
    end
    if not t.version then
        return nil, "no version line"
    end
    for form in pairs(t.body) do
        if not t.forms[form] then
            return nil, "body limit of formation " .. form .. ", which has no formation line"
        end
    end
    for d, form in pairs(t.hosts) do
        if not t.forms[form] then
            return nil, "domain " .. d .. " names formation " .. form .. ", which has no formation line"
        end
    end
    return t
end

-- current returns the routes this worker serves now.
local function current()
    local v = dict:get("version")
    if v == cache.version then
        return cache
    end
    local text = dict:get("routes")
    if not text then
        return cache
    end
    local t, err = parse(text)
    if not t then
        ngx.log(ngx.ERR, "deis: ignoring unreadable routes: ", err)
        return cache
    end
    cache = t
    return t
end

-- lookup finds the formation serving host: an exact domain first, then the
-- longest wildcard (*.example.com matches a.example.com and a.b.example.com),
-- as nginx's server_name does.
local function lookup(t, host)
    local f = t.hosts[host]
    if f then
        return f
    end
    local rest = host
    while true do
        local i = string.find(rest, ".", 1, true)
        if not i then
            return nil
        end
        rest = string.sub(rest, i + 1)
        f = t.hosts["*." .. rest]
        if f then
            return f
        end
    end
end

-- size renders a byte count as deisctl does: 10M, 1G, 1536K, 1000.
local function size(n)
    for _, u in ipairs({ { 1073741824, "G" }, { 1048576, "M" }, { 1024, "K" } }) do
        if n % u[1] == 0 then
            return string.format("%d%s", n / u[1], u[2])
        end
    end
    return string.format("%d", n)
end

-- tier is the @body_N location for a chunked body under limit: the limit
-- rounded up to a power of two from 1M, at most the ceiling (the config
-- has a location for each).
local function tier(limit)
    local n = 1048576
    while n < limit and n < ceiling do
        n = n * 2
    end
    return math.min(n, ceiling)
end

-- bodysize measures the request body read so far.
local function bodysize()
    local data = ngx.req.get_body_data()
    if data then
        return #data
    end
    local name = ngx.req.get_body_file()
    if not name then
        return 0
    end
    local fh = io.open(name, "rb")
    if not fh then
        return 0
    end
    local n = fh:seek("end")
    fh:close()
    return n or 0
end

-- route picks the formation of the request (rewrite phase) and checks its
-- body. mode is "main" (location /), "drain" (@drain) or "chunked"
-- (@body_N). While the agent drains connections before a reload, requests
-- move to @drain, which serves them the same way but closes the connection
-- after the response.
function M.route(mode)
    if mode == "main" and dict:get("drain") then
        return ngx.exec("@drain")
    end
    local t = current()
    local f = lookup(t, ngx.var.host or "")
    if not f then
        return ngx.exec("@notfound")
    end
    ngx.var.deis_formation = f
    if M.https_route(t, f) then
        return
    end
    local peers = t.forms[f]
    if #peers == 0 then
        return ngx.exec("@unready")
    end
    local limit = t.body[f] or default_body
    ngx.var.deis_max_body = size(limit)
    local len = tonumber(ngx.var.content_length or "")
    if len then
        if len > limit then
            return ngx.exec("@toolarge")
        end
    elseif ngx.var.http_transfer_encoding then
        if mode ~= "chunked" then
            return ngx.exec("@body_" .. tier(limit))
        end
        ngx.req.read_body() -- nginx answers 413 beyond the tier
        if bodysize() > limit then
            return ngx.exec("@toolarge")
        end
    end
    local method = ngx.req.get_method()
    if not idempotent[method] then
        ngx.var.deis_pool = "deis_apps_once"
        ngx.ctx.deis_once = not guarded[method]
    end
    ngx.ctx.deis_peers = peers
    ngx.ctx.deis_release = t.release[f]
end

-- balance sets the upstream peer (balancer phase); a retry takes the next.
function M.balance()
    if not balancer then
        balancer = require("ngx.balancer")
    end
    local ctx = ngx.ctx
    local peers = ctx.deis_peers
    if not peers then
        ngx.log(ngx.ERR, "deis: no upstreams chosen for this request")
        return ngx.exit(502)
    end
    local n = #peers
    local i = ctx.deis_try
    if i then
        i = i + 1
    else
        local f = ngx.var.deis_formation
        i = (rr[f] or 0) + 1
        rr[f] = i
        -- A method nginx would resend after sending it is tried once.
        if n > 1 and not ctx.deis_once then
            balancer.set_more_tries(n - 1)
        end
    end
    ctx.deis_try = i
    local p = peers[(i - 1) % n + 1]
    local ok, err = balancer.set_current_peer(p[1], p[2])
    if not ok then
        ngx.log(ngx.ERR, "deis: cannot set upstream ", p[1], ":", p[2], ": ", err)
        return ngx.exit(502)
    end
end

local function reply(status, body)
    ngx.status = status
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

-- store checks a routes text and makes it the one every worker serves.
local function store(text)
    local t, err = parse(text)
    if not t then
        return nil, err
    end
    local ok
    ok, err = dict:safe_set("routes", text)
    if not ok then
        return nil, "cannot store the routes: " .. tostring(err)
    end
    ok, err = dict:safe_set("version", t.version)
    if not ok then
        return nil, "cannot store the routes version: " .. tostring(err)
    end
    return t.version
end

-- control_routes serves /routes on the control socket: GET answers the
-- version served, PUT replaces the routes with the body.
-- control_text serves a text kept in shared dict d under "version": GET
-- answers the version served, PUT replaces the text with the body through
-- store_fn, which checks it first. what names the text in errors.
local function control_text(d, what, store_fn)
    local method = ngx.req.get_method()
    if method == "GET" then
        return reply(200, d:get("version") or "")
    end
    if method ~= "PUT" then
        return reply(405, "use GET or PUT\n")
    end
    ngx.req.read_body()
    local text = ngx.req.get_body_data()
    if not text then
        local name = ngx.req.get_body_file()
        if name then
            local fh = io.open(name, "rb")
            if fh then
                text = fh:read("*a")
                fh:close()
            end
        end
    end
    if not text then
        return reply(400, "no " .. what .. " in the request body\n")
    end
    local v, err = store_fn(text)
    if not v then
        return reply(400, err .. "\n")
    end
    return reply(200, v)
end

function M.control_routes()
    return control_text(dict, "routes", store)
end

-- control_drain serves /drain on the control socket: PUT ?seconds=N makes
-- every response close its connection for N seconds, DELETE ends that.
function M.control_drain()
    local method = ngx.req.get_method()
    if method == "DELETE" then
        dict:delete("drain")
        return reply(200, "")
    end
    local secs = tonumber(ngx.var.arg_seconds or "")
    if method ~= "PUT" or not secs or secs <= 0 then
        return reply(400, "use PUT /drain?seconds=N or DELETE /drain\n")
    end
    local ok, err = dict:safe_set("drain", true, secs)
    if not ok then
        return reply(500, tostring(err) .. "\n")
    end
    return reply(200, "")
end

-- init runs in the master (as root) when it loads the config: it sets the
-- default body limit and the ceiling of all limits and, when the shared dict holds no routes (nginx was
-- started, not reloaded), loads the routes file the agent wrote, so a new
-- nginx routes from its first request. The workers, which run as an
-- unprivileged user, never open it.
function M.init(path, body, max)
    default_body = body
    ceiling = max
    if dict:get("version") then
        return
    end
    local fh = io.open(path, "rb")
    if not fh then
        return
    end
    local text = fh:read("*a")
    fh:close()
    local _, err = store(text)
    if err then
        ngx.log(ngx.ERR, "deis: ignoring the routes file ", path, ": ", err)
    end
end

-- Answer counts for automatic rollback: the log phase counts each answer
-- a formation's upstreams were chosen for in the shared dict deis_traffic,
-- keyed "<formation> <release> <class>" (class 2xx..5xx). A counter lives
-- an hour from its first answer, so old releases' counters go away; the
-- agent, which reads them every few seconds, takes a smaller count for a
-- new counter.
local traffic = ngx.shared.deis_traffic

function M.count()
    local v = ngx.ctx.deis_release
    local f = ngx.var.deis_formation
    if not traffic or not v or not f or f == "" then
        return
    end
    local status = tonumber(ngx.var.status) or 0
    if status < 100 then
        return -- the client went away before an answer
    end
    local key = f .. " " .. v .. " " .. math.floor(status / 100) .. "xx"
    local _, err = traffic:incr(key, 1, 0, 3600)
    if err then
        ngx.log(ngx.WARN, "deis: cannot count an answer: ", err)
    end
end

-- control_traffic serves /traffic on the control socket: GET answers every
-- counter, one "<formation> <release> <class> <count>" a line.
function M.control_traffic()
    if not traffic then
        return reply(200, "")
    end
    local out = {}
    for _, k in ipairs(traffic:get_keys(0)) do
        local n = traffic:get(k)
        if n then
            out[#out + 1] = k .. " " .. n
        end
    end
    table.sort(out)
    return reply(200, table.concat(out, "\n"))
end

-- ===== HTTPS: certificates by SNI, redirect, HSTS, ACME HTTP-01 =====
--
-- The agent PUTs the certs text on /certs; it lands in the shared dict
-- deis_certs (memory only: workers never read a key file). One record a
-- line:
--
--   version <hash>
--   cert <id> <base64 PEM chain> <base64 PEM key>
--   sni <domain> <id>
--
-- A name without an sni line (or no SNI at all) gets the default
-- certificate of the config (ssl_certificate), which the master read.

local certs_dict = ngx.shared.deis_certs
local ssl -- ngx.ssl, loaded on first use
local https_port = 0 -- the port redirects go to; 0: no HTTPS
-- Each worker keeps the parsed certs of the last version it saw; parsed
-- chains and keys (cdata) per id are kept while the id is served.
local certs_cache = { version = nil, sni = {}, certs = {} }

-- parse_https reads an https or acme line of the routes text into t.
parse_https = function(t, f)
    if f[1] == "https" and #f == 4 then
        local age = tonumber(f[4])
        if (f[3] ~= "0" and f[3] ~= "1") or not age or age < 0 or age ~= math.floor(age) then
            return "bad https line"
        end
        t.https[f[2]] = { redirect = f[3] == "1", hsts = age }
        return nil
    end
    if f[1] == "acme" and #f == 4 then
        if not string.match(f[3], "^[%w_-]+$") or not string.match(f[4], "^[%w_-]+%.[%w_-]+$") then
            return "bad acme line"
        end
        t.acme[f[2]] = t.acme[f[2]] or {}
        t.acme[f[2]][f[3]] = f[4]
        return nil
    end
    return "cannot read " .. f[1] .. " line"
end

-- https_route runs in route, once the formation f of the request is known:
-- it answers ACME challenges, redirects plain HTTP when the formation asks
-- for it, and marks HTTPS requests for HSTS. It returns true when it
-- answered the request.
function M.https_route(t, f)
    local uri = ngx.var.uri
    local token = string.match(uri, "^/%.well%-known/acme%-challenge/([%w_-]+)$")
    if token then
        local ka = t.acme[f] and t.acme[f][token]
        if ka then
            ngx.header["Content-Type"] = "text/plain"
            ngx.print(ka)
            ngx.exit(ngx.HTTP_OK)
            return true
        end
    end
    local h = t.https[f]
    if not h then
        return false
    end
    if ngx.var.https == "on" then
        if h.hsts > 0 then
            ngx.ctx.deis_hsts = h.hsts
        end
        return false
    end
    if h.redirect and https_port > 0 then
        local port = ""
        if https_port ~= 443 then
            port = ":" .. https_port
        end
        ngx.redirect("https://" .. ngx.var.host .. port .. ngx.var.request_uri, 308)
        return true
    end
    return false
end

-- https_headers (header filter) adds Strict-Transport-Security to the
-- HTTPS responses of formations that asked for it.
function M.https_headers()
    local age = ngx.ctx.deis_hsts
    if age then
        ngx.header["Strict-Transport-Security"] = "max-age=" .. age
    end
end

local function parse_certs(text)
    local t = { sni = {}, certs = {} }
    local n = 0
    for line in string.gmatch(text, "[^\n]+") do
        n = n + 1
        local f = {}
        for w in string.gmatch(line, "%S+") do
            f[#f + 1] = w
        end
        if f[1] == "version" and #f == 2 then
            t.version = f[2]
        elseif f[1] == "cert" and #f == 4 then
            local chain, key = ngx.decode_base64(f[3]), ngx.decode_base64(f[4])
            if not chain or not key then
                return nil, "line " .. n .. ": bad base64"
            end
            t.certs[f[2]] = { chain = chain, key = key }
        elseif f[1] == "sni" and #f == 3 then
            t.sni[f[2]] = f[3]
        else
            return nil, "line " .. n .. ": cannot read " .. (f[1] or "")
        end
    end
    if not t.version then
        return nil, "no version line"
    end
    for d, id in pairs(t.sni) do
        if not t.certs[id] then
            return nil, "domain " .. d .. " names certificate " .. id .. ", which has no cert line"
        end
    end
    return t
end

local function current_certs()
    local v = certs_dict:get("version")
    if v == certs_cache.version then
        return certs_cache
    end
    local text = certs_dict:get("certs")
    if not text then
        return certs_cache
    end
    local t, err = parse_certs(text)
    if not t then
        ngx.log(ngx.ERR, "deis: ignoring unreadable certificates: ", err)
        return certs_cache
    end
    -- Keep what this worker parsed of the certificates still served.
    for id, c in pairs(t.certs) do
        local old = certs_cache.certs[id]
        if old and old.der_chain then
            c.der_chain, c.der_key = old.der_chain, old.der_key
        end
    end
    certs_cache = t
    return t
end

-- ssl_certificate (ssl_certificate_by_lua) serves the certificate of the
-- name the client asked for: exact, then a one-label wildcard.
function M.ssl_certificate()
    if not ssl then
        ssl = require("ngx.ssl")
    end
    local name = ssl.server_name()
    if not name then
        return
    end
    name = string.lower(name)
    local t = current_certs()
    local id = t.sni[name]
    if not id then
        local i = string.find(name, ".", 1, true)
        if i then
            id = t.sni["*" .. string.sub(name, i)]
        end
    end
    if not id then
        return -- the default certificate
    end
    local c = t.certs[id]
    if not c.der_chain then
        local chain, err = ssl.parse_pem_cert(c.chain)
        if not chain then
            ngx.log(ngx.ERR, "deis: cannot parse certificate ", id, ": ", err)
            return
        end
        local key
        key, err = ssl.parse_pem_priv_key(c.key)
        if not key then
            ngx.log(ngx.ERR, "deis: cannot parse the key of certificate ", id, ": ", err)
            return
        end
        c.der_chain, c.der_key = chain, key
    end
    local ok, err = ssl.clear_certs()
    if ok then
        ok, err = ssl.set_cert(c.der_chain)
    end
    if ok then
        ok, err = ssl.set_priv_key(c.der_key)
    end
    if not ok then
        ngx.log(ngx.ERR, "deis: cannot serve certificate ", id, " for ", name, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

local function store_certs(text)
    local t, err = parse_certs(text)
    if not t then
        return nil, err
    end
    local ok
    ok, err = certs_dict:safe_set("certs", text)
    if not ok then
        return nil, "cannot store the certificates: " .. tostring(err)
    end
    ok, err = certs_dict:safe_set("version", t.version)
    if not ok then
        return nil, "cannot store the certificates version: " .. tostring(err)
    end
    return t.version
end

-- control_certs serves /certs on the control socket: GET answers the
-- version served, PUT replaces the certificates with the body.
function M.control_certs()
    return control_text(certs_dict, "certificates", store_certs)
end

-- init_https runs in the master (as root) after init: it sets the HTTPS
-- port (0: no HTTPS) and, when nginx was started rather than reloaded,
-- loads the certs file the agent wrote (0600, root).
function M.init_https(path, port)
    https_port = port
    if certs_dict:get("version") then
        return
    end
    local fh = io.open(path, "rb")
    if not fh then
        return
    end
    local text = fh:read("*a")
    fh:close()
    local _, err = store_certs(text)
    if err then
        ngx.log(ngx.ERR, "deis: ignoring the certificates file ", path, ": ", err)
    end
end

return M
