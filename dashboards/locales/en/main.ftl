# APR dashboards message catalogue (English). Every id here must also exist in
# locales/es-CL/main.ftl, the default (a test checks both ways).

app-name = APR monitoring

## Header and navigation
nav-label = Main navigation
nav-logout = Log out
nav-operator = My APR
nav-engineer = APRs
nav-gore = Region
nav-gore-programme = Programme
nav-admin = Administration
lang-es = Spanish
lang-en = English
role-operator = Operator
role-engineer = Engineering
role-gore = GORE
role-admin = Administration

## Login
login-title = Sign in
login-username = Username
login-password = Password
login-submit = Sign in
login-error-credentials = Wrong username or password.
login-error-expired = Your session ended. Please sign in again.
login-error-throttled = Too many attempts. Wait a few minutes and try again.

## Alerts
alerts-title = Open alerts
alerts-count = { $count ->
    [1] 1 alert
   *[other] { $count } alerts
}
alerts-none = No open alerts.
alert-opened = Since
alert-device = Device
alert-value = Value
alert-threshold = Limit
alert-comment = Comment
alert-comment-hint = What you did or will do
alert-ack = Acknowledge
alert-kind-chlorine-low = Free chlorine low
alert-kind-chlorine-high = Free chlorine high
alert-kind-turbidity-high = Turbidity high
alert-kind-ph-out-of-range = pH out of range
alert-kind-tank-low = Tank low
alert-kind-pressure-low = Pressure low
alert-kind-night-flow-high = Night flow high (possible leak)
alert-kind-device-offline = Device offline
severity-info = Notice
severity-warning = Warning
severity-critical = Critical

## Operator
operator-other-aprs = Your other APRs
operator-last-reading = Last reading
operator-now = Now
operator-charts = Last 7 days
limit-range = Acceptable range
level-ok = Normal
level-warning = Attention
level-critical = Out of limits
level-unknown = No recent value
devices-title = Devices
device-online = Online
device-offline = Offline
col-device = Device
col-status = Status
col-last-seen = Last contact
col-battery = Battery (V)
col-signal = Signal (dBm)
col-outbox = Queued
dpd-title = Manual chlorine check (DPD)
dpd-help = Record the free chlorine reading of the DPD kit; it is compared with the probe's.
dpd-value = Free chlorine (mg/L)
dpd-taken-at = Sample date and time
dpd-place = Sample location
dpd-place-hint = E.g. tank, house connection
dpd-submit = Save check
dpd-recent = Recent checks
col-time = Date and time
col-dpd = DPD (mg/L)
col-probe = Probe (mg/L)
col-by = Recorded by

## Quantities
metric-chlorine = Free chlorine
metric-turbidity = Turbidity
metric-tank-level = Tank level
metric-flow = Flow
metric-pressure = Pressure
metric-ph = pH
metric-conductivity = Conductivity
metric-volume = Volume
metric-battery = Battery
metric-rssi = Radio signal

## Charts
chart-desc = Series from { $from } to { $to }; minimum { $min }, maximum { $max } { $unit }.
chart-no-data = No data in this period

## Engineering
engineer-title = Programme APRs
engineer-back = All APRs
kpi-window = Indicators from { $from } to { $to }
flags-legend = Components: Diag = diagnosis, Tech = technology improvements, Eng = engineering, Trn = training.
col-apr = APR
col-comuna = Comuna
col-region = Region
col-beneficiaries = Beneficiaries
col-chlorine-compliance = Chlorine compliance (%)
col-night-flow = Minimum night flow (L/s)
col-nrw = Non-revenue water (L/connection/day)
col-continuity = Continuity (h/day)
col-open-alerts = Open alerts
col-flags = Components
component-diagnosis = Diagnosis
component-technology = Technology improvements
component-engineering = Engineering
component-training = Training
component-diagnosis-short = Diag
component-technology-short = Tech
component-engineering-short = Eng
component-training-short = Trn
flag-yes = Needed
flag-no = Not needed
kpi-chlorine-compliance = Chlorine compliance
kpi-days-without-chlorine = Days without a chlorine reading
kpi-min-night-flow = Minimum night flow
kpi-nrw = Non-revenue water
kpi-continuity = Continuity of service
kpi-ili = Leakage index (ILI, indicative)
kpi-energy-intensity = Energy intensity
assessment-title = Assessment
assessment-computed = Computed
assessment-no-reasons = No findings.
assessment-pending = The assessment has not been computed yet.
col-kpi = Indicator
col-value = Value
col-threshold = Threshold
col-window = Period
kpi-history = Indicator history
explorer-title = Series explorer
explorer-metric = Variable
explorer-from = From
explorer-to = To
explorer-submit = Show
explorer-caption = { $raw } readings in the period; { $drawn } points drawn.
export-title = Export
export-series-csv = Series (CSV)
export-kpis-csv = Indicators (CSV)
export-epanet = 24-hour demand pattern (EPANET)

## GORE
gore-nav = Region
gore-title-region = { $region } region
gore-title-programme = Whole programme
gore-generated = Figures as of
gore-print = Printable report
gore-report-title = Progress report
gore-print-hint = Use the browser's Print to save as PDF.
fig-aprs = APRs
fig-comunas = Comunas
fig-regions = Regions
fig-beneficiaries = Beneficiaries
fig-gore-contribution = GORE contribution
fig-public-investment = Public investment
fig-open-alerts = Open alerts
gore-flagged = APRs needing each component
gore-aprs = APRs
col-gore-clp = GORE contribution (CLP)
col-investment-clp = Public investment (CLP)
gore-interventions = Interventions and outcomes
gore-no-interventions = No interventions recorded yet.
intervention-cost = Cost
col-before = Before
col-after = After
col-change = Outcome
outcome-better = Improved
outcome-worse = Worsened
outcome-same = No change

## Administration
admin-title = Administration
admin-secret-once = New secret for { $subject }. Copy it now: it will not be shown again.
admin-users = Users and tokens
admin-new-user = New user
admin-scope-hint = Scope: comma-separated APRs (operator) or a region (GORE)
admin-last-used = last used
admin-revoke = Revoke
admin-issue-token = New token
admin-disable = Disable
admin-create = Create
admin-save = Save
admin-delete = Delete
admin-devices = Devices and credentials
admin-new-device = New device
admin-rotate = New MQTT password
admin-aprs = APR registry
admin-upsert-apr = Add or update an APR
admin-overrides = Per-APR thresholds
admin-new-override = New threshold
admin-audit = Audit log
col-time-utc = Date and time (UTC)
col-actor = Who
col-action = Action
col-target = Object
admin-interventions = Interventions
admin-new-intervention = Record an intervention
col-username = Username
col-role = Role
col-scope = Scope
col-tokens = Tokens
col-actions = Actions
col-mqtt-user = MQTT username
col-id = Id
col-connections = Connections
col-limit = Threshold
col-component = Component
col-date = Date
col-description = Description

## Errors
error-400 = Invalid request
error-400-detail = The request has data that cannot be read. Check the form and try again.
error-403 = You do not have access to this APR
error-403-detail = Your user is not allowed to see this page. If you think this is a mistake, contact the programme's administrator.
error-csrf = The form has expired
error-csrf-detail = For security the form is no longer valid. Go back, reload the page and try again.
error-404 = Page not found
error-404-detail = The address does not exist or the APR is not registered.
error-500 = Server error
error-500-detail = Something went wrong on our side. It has been logged; try again in a few minutes.
error-request-id = Reference code: { $id }
error-home = Back to the start
