-- wrk script: cycles through every soak endpoint, with a POST body on /post.
local paths = { "/array", "/numeric", "/fh", "/object", "/delayed", "/timer", "/stream",
                "/post", "/die", "/invalid", "/splitting", "/getline-die", "/missing" }
local body = string.rep("p", 3000)
local counter = 0

request = function()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  if path == "/post" then
    return wrk.format("POST", path, { ["Content-Type"] = "text/plain" }, body)
  end
  return wrk.format("GET", path)
end
