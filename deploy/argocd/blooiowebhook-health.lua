-- Argo CD health check for blooio.com/BlooioWebhook (kstatus-compatible).
-- Keep identical to the copy inlined in argocd-cm-patch.yaml (a unit test checks).
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for blooio-operator to reconcile the webhook"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for blooio-operator to observe the latest spec"
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled: " .. tostring(stalled.reason))
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  if obj.spec ~= nil and obj.spec.suspend == true then
    hs.status = "Suspended"
    hs.message = "Webhook is disabled at Blooio (spec.suspend is true)"
    return hs
  end
  hs.status = "Healthy"
  hs.message = message(ready, "Webhook is active and its signing secret is in place")
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, "Waiting for the webhook to become ready")
return hs
