// All labels of the wall screen, one dictionary per language (Vietnamese is the default).
export const TZ = "Asia/Ho_Chi_Minh";

export const TEXT = {
  vi: {
    // Terms follow docs/glossary.md: one Vietnamese word per concept.
    title: "IOC Vị Thanh – Ngã Bảy", lastUpdate: "Cập nhật lúc", map: "Bản đồ",
    alerts: "Cảnh báo đang hoạt động", water: "Mực nước", rain: "Lượng mưa", lighting: "Chiếu sáng",
    traffic: "Giao thông", incidents: "Sự cố", reports: "Phản ánh", report: "Phản ánh", reported: "Gửi lúc", kpis: "Chỉ số", ack: "Tiếp nhận", silence: "Tạm ngưng 2 giờ",
    openIncident: "Mở sự cố", acked: "đã tiếp nhận", silenced: "đang tạm ngưng", mute: "Tắt chuông",
    unmute: "Bật chuông", all: "Tất cả", city: "Khu vực", ward: "Phường/xã", domain: "Lĩnh vực",
    noAlerts: "Không có cảnh báo.", noIncidents: "Không có sự cố.", signIn: "Đăng nhập",
    tokenPrompt: "Nhập mã truy cập:", signOut: "Đăng xuất", badToken: "Mã truy cập không hợp lệ.",
    disconnected: "MẤT KẾT NỐI — dữ liệu có thể đã cũ, đang kết nối lại…",
    stale: (s) => `DỮ LIỆU CŨ — không nhận được tín hiệu trong ${s} giây`,
    critical: "Nghiêm trọng", warning: "Chú ý", info: "Thông tin", firing: "Đang hoạt động",
    normal: "Bình thường", alert: "Nghiêm trọng", offline: "Mất kết nối", online: "Trực tuyến",
    overdue: "Quá hạn", left: "còn", onTime: "Đúng hạn", satisfaction: "Hài lòng", target: "mục tiêu",
    on: "Sáng", off: "Tắt", faulty: "Hỏng", tonightKwh: "kWh tối nay", lastWeekKwh: "tuần trước", congestion: "Ùn tắc", close: "Đóng", device: "Thiết bị",
    agencyView: "Sự cố của đơn vị", role: "Vai trò", noData: "Chưa có dữ liệu", status: "Trạng thái",
    deadline: "Hạn xử lý", station: "Trạm", agency: "Đơn vị xử lý", category: "Lĩnh vực phản ánh",
    statuses: { new: "Mới", dispatched: "Đã chuyển", accepted: "Đã nhận việc", in_progress: "Đang xử lý",
                resolved: "Đã xử lý xong", closed: "Đã đóng", rejected: "Bị từ chối" },
    domains: { flood: "Ngập", rain: "Mưa", lighting: "Chiếu sáng", traffic: "Giao thông", salinity: "Xâm nhập mặn" },
    salinity: "Độ mặn",
    timeline: "Diễn biến 6 giờ qua và triều dự báo", observed: "Mực nước đo", predictedTide: "Triều dự báo",
    moreAlerts: (n) => `… và ${n} cảnh báo khác (lọc theo khu vực, phường/xã, lĩnh vực)`,
    openIncidents: "Sự cố đang mở", since: "từ", alertsShort: "Cảnh báo", incidentsShort: "Sự cố mở", ofReports: "phản ánh", ofAllCases: "mọi sự cố", rainRate: "Cường độ mưa",
    junction: "Nút giao", congestionSpeed: "Ùn tắc · tốc độ",
    kinds: { flood: "Trạm đo mực nước", rain: "Trạm đo mưa", lighting: "Đèn chiếu sáng", cabinet: "Tủ điện chiếu sáng", traffic: "Thiết bị giao thông", salinity: "Trạm đo độ mặn" },
    roles: { admin: "Quản trị", operator: "Điều hành viên", viewer: "Người xem" },
    units: { h: "giờ", min: "ph" },  // "ph" (phút) to fit a countdown in the incident row
    metrics: {
      water_level_m: "Mực nước", battery_v: "Điện áp pin", rain_rate_mm_h: "Cường độ mưa", rain_mm: "Lượng mưa",
      rain_24h_mm: "Mưa 24 giờ", dim_level_pct: "Mức độ sáng", power_w: "Công suất", voltage_v: "Điện áp",
      current_a: "Dòng điện", power_factor: "Hệ số công suất", energy_kwh: "Điện năng", operating_hours: "Giờ hoạt động",
      gear_temperature_c: "Nhiệt độ bộ điều khiển", voltage_l1_v: "Điện áp pha L1", voltage_l2_v: "Điện áp pha L2",
      voltage_l3_v: "Điện áp pha L3", current_l1_a: "Dòng pha L1", current_l2_a: "Dòng pha L2", current_l3_a: "Dòng pha L3",
      door_open: "Cửa tủ mở", count_motorbike: "Xe máy", count_car: "Ô tô", count_truck: "Xe tải", count_bus: "Xe buýt",
      speed_kmh: "Tốc độ", occupancy_pct: "Độ chiếm dụng", interval_s: "Chu kỳ đếm", salinity_ppt: "Độ mặn", water_temp_c: "Nhiệt độ nước",
    },
  },
  en: {
    title: "Vị Thanh – Ngã Bảy IOC", lastUpdate: "Last update", map: "Map",
    alerts: "Active alerts", water: "Water level", rain: "Rainfall", lighting: "Street lighting",
    traffic: "Traffic", incidents: "Incidents", reports: "Reports", report: "Report", reported: "Sent at", kpis: "KPIs", ack: "Acknowledge", silence: "Silence 2 h",
    openIncident: "Open incident", acked: "acknowledged", silenced: "silenced", mute: "Mute sound",
    unmute: "Sound on", all: "All", city: "Area", ward: "Ward/commune", domain: "Domain",
    noAlerts: "No active alerts.", noIncidents: "No incidents.", signIn: "Sign in",
    tokenPrompt: "Enter your access token:", signOut: "Sign out", badToken: "Invalid access token.",
    disconnected: "DISCONNECTED — data may be out of date, reconnecting…",
    stale: (s) => `STALE — no frame received for ${s} s`,
    critical: "Critical", warning: "Warning", info: "Info", firing: "Firing",
    normal: "Normal", alert: "Critical", offline: "Offline", online: "Online",
    overdue: "Overdue", left: "left", onTime: "On time", satisfaction: "Satisfaction", target: "target",
    on: "On", off: "Off", faulty: "Faulty", tonightKwh: "kWh tonight", lastWeekKwh: "last week", congestion: "Congestion", close: "Close", device: "Device",
    agencyView: "Our agency's incidents", role: "Role", noData: "No data yet", status: "Status",
    deadline: "Deadline", station: "Station", agency: "Agency", category: "Report category",
    statuses: { new: "New", dispatched: "Dispatched", accepted: "Accepted", in_progress: "In progress",
                resolved: "Resolved", closed: "Closed", rejected: "Rejected" },
    domains: { flood: "Flood", rain: "Rain", lighting: "Lighting", traffic: "Traffic", salinity: "Salinity" },
    salinity: "Salinity",
    timeline: "Last 6 hours and predicted tide", observed: "Observed level", predictedTide: "Predicted tide",
    moreAlerts: (n) => `… and ${n} more alerts (filter by area, ward, domain)`,
    openIncidents: "Open incidents", since: "since", alertsShort: "Alerts", incidentsShort: "Open incidents", ofReports: "reports", ofAllCases: "all cases", rainRate: "Rain rate",
    junction: "Junction", congestionSpeed: "Congestion · speed",
    kinds: { flood: "Water-level station", rain: "Rain gauge", lighting: "Street lamp", cabinet: "Lighting cabinet", traffic: "Traffic device", salinity: "Salinity station" },
    roles: { admin: "Administrator", operator: "Operator", viewer: "Viewer" },
    units: { h: "h", min: "min" },
    metrics: {
      water_level_m: "Water level", battery_v: "Battery voltage", rain_rate_mm_h: "Rain rate", rain_mm: "Rain",
      rain_24h_mm: "Rain 24 h", dim_level_pct: "Dim level", power_w: "Power", voltage_v: "Voltage",
      current_a: "Current", power_factor: "Power factor", energy_kwh: "Energy", operating_hours: "Operating hours",
      gear_temperature_c: "Driver temperature", voltage_l1_v: "Voltage L1", voltage_l2_v: "Voltage L2",
      voltage_l3_v: "Voltage L3", current_l1_a: "Current L1", current_l2_a: "Current L2", current_l3_a: "Current L3",
      door_open: "Door open", count_motorbike: "Motorbikes", count_car: "Cars", count_truck: "Trucks", count_bus: "Buses",
      speed_kmh: "Speed", occupancy_pct: "Occupancy", interval_s: "Count interval", salinity_ppt: "Salinity", water_temp_c: "Water temperature",
    },
  },
};

let lang = localStorage.getItem("ioc.lang") === "en" ? "en" : "vi";
export const getLang = () => lang;
export function setLang(l) { lang = l; localStorage.setItem("ioc.lang", l); }
export const t = (key, ...args) => {
  const v = TEXT[lang][key];
  return typeof v === "function" ? v(...args) : v ?? key;
};
// Formatters are cached: building an Intl.DateTimeFormat costs far more than using one, and the
// page formats times on every frame.
const formatters = new Map();
function formatter(kind) {
  const key = `${lang}/${kind}`;
  let f = formatters.get(key);
  if (!f) {
    const opts = { timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    if (kind !== "time") Object.assign(opts, { day: "2-digit", month: "2-digit" });
    if (kind === "clock") opts.weekday = "short";
    formatters.set(key, f = new Intl.DateTimeFormat(lang === "vi" ? "vi-VN" : "en-GB", opts));
  }
  return f;
}
export function fmtTime(value, withDate = false) {
  if (!value) return "—";
  const d = value instanceof Date ? value : new Date(value);
  if (isNaN(d)) return String(value);
  return formatter(withDate ? "date" : "time").format(d);
}
export const fmtClock = (d) => formatter("clock").format(d);
export function fmtDuration(ms) {
  const m = Math.round(Math.abs(ms) / 60000), u = t("units");
  return m >= 60 ? `${Math.floor(m / 60)} ${u.h} ${m % 60} ${u.min}` : `${m} ${u.min}`;
}

// Numbers as the reader writes them: 0,85 and 1.250 in Vietnamese, 0.85 and 1,250 in English.
const numberFormats = new Map();
export function fmtNumber(v, digits = 0) {
  if (v == null || Number.isNaN(v)) return "—";
  if (typeof v !== "number") return String(v);
  const key = `${lang}/${digits}`;
  let f = numberFormats.get(key);
  if (!f) numberFormats.set(key, f = new Intl.NumberFormat(lang === "vi" ? "vi-VN" : "en-GB",
    { minimumFractionDigits: digits, maximumFractionDigits: digits }));
  return f.format(v);
}
export const fmtPercent = (ratio) => `${fmtNumber(ratio * 100)} %`;

// Names, never ids: what the site says a city, ward, agency, category, junction or device is
// called (filled from /api/v1/site and the device list; unknown ids are shown as they are).
const NAMES = { city: new Map(), ward: new Map(), agency: new Map(), category: new Map(),
                junction: new Map(), device: new Map() };
export function setNames(site, devices = []) {
  for (const c of site.cities || []) NAMES.city.set(c.id, { vi: c.name, en: c.name });
  for (const w of site.wards?.features || []) {
    const name = { vi: w.properties.name, en: w.properties.name };
    // former wards (aliases since the July 2025 merger) read as the unit they are now part of
    for (const id of [w.id, ...(w.properties.aliases || [])]) NAMES.ward.set(id, name);
  }
  for (const a of site.agencies || []) NAMES.agency.set(a.id, { vi: a.name_vi, en: a.name_en });
  for (const c of site.categories || []) NAMES.category.set(c.code, { vi: c.name_vi, en: c.name_en });
  for (const j of site.junctions || []) NAMES.junction.set(j.id, { vi: j.name, en: j.name });
  for (const d of devices) NAMES.device.set(d.id, { vi: d.name, en: d.name });
}
export function nameOf(kind, id) {
  if (id == null || id === "") return "";
  const n = NAMES[kind]?.get(id);
  return (n && (n[lang] || n.vi)) || String(id);
}
