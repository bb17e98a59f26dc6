# Catálogo de mensajes de los tableros APR (español de Chile, idioma por defecto).
# Cada id debe existir también en locales/en/main.ftl (lo verifica un test).

app-name = Monitoreo APR

## Encabezado y navegación
nav-label = Navegación principal
nav-logout = Cerrar sesión
nav-operator = Mi APR
nav-engineer = APRs
nav-gore = Región
nav-gore-programme = Programa
nav-admin = Administración
lang-es = Español
lang-en = Inglés
role-operator = Operador
role-engineer = Ingeniería
role-gore = GORE
role-admin = Administración

## Ingreso
login-title = Ingresar
login-username = Usuario
login-password = Contraseña
login-submit = Ingresar
login-error-credentials = Usuario o contraseña incorrectos.
login-error-expired = Su sesión terminó. Ingrese nuevamente.
login-error-throttled = Demasiados intentos. Espere unos minutos e intente otra vez.

## Alertas
alerts-title = Alertas abiertas
alerts-count = { $count ->
    [1] 1 alerta
   *[other] { $count } alertas
}
alerts-none = No hay alertas abiertas.
alert-opened = Desde
alert-device = Equipo
alert-value = Valor
alert-threshold = Límite
alert-comment = Comentario
alert-comment-hint = Qué hizo o qué hará
alert-ack = Acusar recibo
alert-kind-chlorine-low = Cloro libre bajo
alert-kind-chlorine-high = Cloro libre alto
alert-kind-turbidity-high = Turbiedad alta
alert-kind-ph-out-of-range = pH fuera de rango
alert-kind-tank-low = Estanque bajo
alert-kind-pressure-low = Presión baja
alert-kind-night-flow-high = Caudal nocturno alto (posible fuga)
alert-kind-device-offline = Equipo sin conexión
severity-info = Aviso
severity-warning = Advertencia
severity-critical = Crítica

## Operador
operator-other-aprs = Sus otras APR
operator-last-reading = Última lectura
operator-now = Ahora
operator-charts = Últimos 7 días
limit-range = Rango aceptable
level-ok = Normal
level-warning = Atención
level-critical = Fuera de límite
level-unknown = Sin dato reciente
devices-title = Equipos
device-online = En línea
device-offline = Sin conexión
col-device = Equipo
col-status = Estado
col-last-seen = Último contacto
col-battery = Batería (V)
col-signal = Señal (dBm)
col-outbox = Por enviar
dpd-title = Medición manual de cloro (DPD)
dpd-help = Registre la medición de cloro libre del kit DPD; se compara con la del sensor.
dpd-value = Cloro libre (mg/L)
dpd-taken-at = Fecha y hora de la muestra
dpd-place = Lugar de la muestra
dpd-place-hint = Ej.: estanque, arranque domiciliario
dpd-submit = Guardar medición
dpd-recent = Mediciones recientes
col-time = Fecha y hora
col-dpd = DPD (mg/L)
col-probe = Sensor (mg/L)
col-by = Registró

## Magnitudes
metric-chlorine = Cloro libre
metric-turbidity = Turbiedad
metric-tank-level = Nivel del estanque
metric-flow = Caudal
metric-pressure = Presión
metric-ph = pH
metric-conductivity = Conductividad
metric-volume = Volumen
metric-battery = Batería
metric-rssi = Señal de radio

## Gráficos
chart-desc = Serie del { $from } al { $to }; mínimo { $min }, máximo { $max } { $unit }.
chart-no-data = Sin datos en este período

## Ingeniería
engineer-title = APRs del programa
engineer-back = Todas las APR
kpi-window = Indicadores del { $from } al { $to }
flags-legend = Componentes: Diag = diagnóstico, Tec = mejoras tecnológicas, Ing = ingeniería, Cap = capacitación.
col-apr = APR
col-comuna = Comuna
col-region = Región
col-beneficiaries = Beneficiarios
col-chlorine-compliance = Cumplimiento cloro (%)
col-night-flow = Caudal mínimo nocturno (L/s)
col-nrw = Agua no facturada (L/arranque/día)
col-continuity = Continuidad (h/día)
col-open-alerts = Alertas abiertas
col-flags = Componentes
component-diagnosis = Diagnóstico
component-technology = Mejoras tecnológicas
component-engineering = Ingeniería
component-training = Capacitación
component-diagnosis-short = Diag
component-technology-short = Tec
component-engineering-short = Ing
component-training-short = Cap
flag-yes = Requiere
flag-no = No requiere
kpi-chlorine-compliance = Cumplimiento de cloro
kpi-days-without-chlorine = Días sin lectura de cloro
kpi-min-night-flow = Caudal mínimo nocturno
kpi-nrw = Agua no facturada
kpi-continuity = Continuidad de servicio
kpi-ili = Índice de fugas (ILI, indicativo)
kpi-energy-intensity = Intensidad energética
assessment-title = Evaluación
assessment-computed = Calculada
assessment-no-reasons = Sin observaciones.
assessment-pending = La evaluación aún no se ha calculado.
col-kpi = Indicador
col-value = Valor
col-threshold = Umbral
col-window = Período
kpi-history = Historia de indicadores
explorer-title = Explorador de series
explorer-metric = Variable
explorer-from = Desde
explorer-to = Hasta
explorer-submit = Ver
explorer-caption = { $raw } lecturas en el período; { $drawn } puntos dibujados.
export-title = Exportar
export-series-csv = Serie (CSV)
export-kpis-csv = Indicadores (CSV)
export-epanet = Patrón de demanda de 24 horas (EPANET)

## GORE
gore-nav = Región
gore-title-region = Región de { $region }
gore-title-programme = Programa completo
gore-generated = Cifras al
gore-print = Informe para imprimir
gore-report-title = Informe de avance
gore-print-hint = Use «Imprimir» del navegador para guardar en PDF.
fig-aprs = APR
fig-comunas = Comunas
fig-regions = Regiones
fig-beneficiaries = Beneficiarios
fig-gore-contribution = Aporte GORE
fig-public-investment = Inversión pública
fig-open-alerts = Alertas abiertas
gore-flagged = APR que requieren cada componente
gore-aprs = APR
col-gore-clp = Aporte GORE (CLP)
col-investment-clp = Inversión pública (CLP)
gore-interventions = Intervenciones y resultados
gore-no-interventions = Aún no hay intervenciones registradas.
intervention-cost = Costo
col-before = Antes
col-after = Después
col-change = Resultado
outcome-better = Mejoró
outcome-worse = Empeoró
outcome-same = Sin cambio

## Administración
admin-title = Administración
admin-secret-once = Secreto nuevo para { $subject }. Cópielo ahora: no se volverá a mostrar.
admin-users = Usuarios y tokens
admin-new-user = Nuevo usuario
admin-scope-hint = Alcance: APR separadas por comas (operador) o región (GORE)
admin-last-used = último uso
admin-revoke = Revocar
admin-issue-token = Nuevo token
admin-disable = Desactivar
admin-create = Crear
admin-save = Guardar
admin-delete = Eliminar
admin-devices = Equipos y credenciales
admin-new-device = Nuevo equipo
admin-rotate = Nueva contraseña MQTT
admin-aprs = Registro de APR
admin-upsert-apr = Agregar o actualizar APR
admin-overrides = Umbrales por APR
admin-new-override = Nuevo umbral
admin-audit = Registro de auditoría
col-time-utc = Fecha y hora (UTC)
col-actor = Quién
col-action = Acción
col-target = Objeto
admin-interventions = Intervenciones
admin-new-intervention = Registrar intervención
col-username = Usuario
col-role = Rol
col-scope = Alcance
col-tokens = Tokens
col-actions = Acciones
col-mqtt-user = Usuario MQTT
col-id = Id
col-connections = Arranques
col-limit = Umbral
col-component = Componente
col-date = Fecha
col-description = Descripción

## Errores
error-400 = Solicitud no válida
error-400-detail = La solicitud tiene datos que no se pueden leer. Revise el formulario e intente otra vez.
error-403 = No tiene acceso a esta APR
error-403-detail = Su usuario no tiene permiso para ver esta página. Si cree que es un error, contacte al administrador del programa.
error-csrf = El formulario expiró
error-csrf-detail = Por seguridad, el formulario ya no es válido. Vuelva a la página, cárguela otra vez e intente de nuevo.
error-404 = Página no encontrada
error-404-detail = La dirección no existe o la APR no está registrada.
error-500 = Error del servidor
error-500-detail = Ocurrió un problema de nuestro lado. Ya quedó registrado; intente de nuevo en unos minutos.
error-request-id = Código de referencia: { $id }
error-home = Volver al inicio
