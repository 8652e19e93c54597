// ==========================================================================================
//  pms9.isl - loyalty edge gateway plugin for MICROS RES 3700 / Simphony (SIM/ISL)
//
//  The register's half of the conversation with the store's loyalty edge gateway: identify a
//  member, apply a coupon's discount, release a coupon, record lottery consent, and post the
//  check at the final tender with the points printed as check information lines.
//  Protocol: docs/protocol.md. Install: isl_plugin/INSTALL.md. Tested by tests/test_isl_*.py,
//  which run this file, unmodified, with isl_plugin/islrun against a real gateway.
//
//  Touchscreen keys (SIM inquiry keys, "pms<N>:<event>" on Simphony):
//    Inq 1  Loyalty member     scan or type the member's card / QR         -> IDENT
//    Inq 2  Loyalty coupon     scan or type a coupon code                  -> COUPON
//    Inq 3  Release coupon     release the last loyalty coupon on the check -> COUPON_VOID
//    Inq 4  Lottery consent    the member joins (1) or leaves (0) the lottery -> CONSENT
//    Inq 5  Loyalty status     is the gateway there? (shows the settings too)  -> PING
//    Final tender            posts the check; the receipt lines go on the check  -> POST
//
//  Every request is one TxMsg with one argument per field; every reply is handled by the
//  "Event RxMsg : <reply name>" of that name, or by "Event RxMsg : _TIMEOUT" when the gateway
//  did not answer within the interface's timeout. Then the cashier sees a short message and
//  the sale goes on: nothing here ever cancels a tender.
//
//  Evidence tags, as in the project's reference notes:
//    [OBS] the construct is seen in real, public ISL scripts
//    [INF] inferred: not seen in a real script; verify on the target system (INSTALL.md)
// ==========================================================================================

RetainGlobalVar          // [OBS] globals live between events: the member stays for the check
UseISLTimeOuts           // [OBS] in every real SIM-link script; effect [INF]: interface timeouts
ContinueOnCancel         // [OBS] Clear at an Input returns here; the events check @INPUTSTATUS

// ---------------------------------- SETTINGS ---------------------------------------------
// Global initial values at the top: [OBS] (Print_Seat_Main.isl, the Starbucks scripts).

// The interface number is the N of this file's name, pms<N>.isl: rename the file to change
// it (INSTALL.md). The reply timeout is the interface's Timeout field, not a script setting.
// Both are repeated here only so the status key (Inq 5) shows what store IT installed.
var gInterface          : N3  = 9
var gTimeoutS           : N3  = 5
var gScriptVersion      : A10 = "1.0.0"

// LoadKybdMacro key types. [OBS] menu item 3 and discount 5 (QR promotion script); another
// script applies discounts with type 6: check yours (INSTALL.md).
var gKeyMenuItem        : N3  = 3
var gKeyDiscount        : N3  = 5

// Discount objects, used when the gateway's COUPON_OK names none (the gateway's wins).
var gDscAmountObj       : N9  = 101   // open amount discount: the amount is typed
var gDscPercentObj      : N9  = 103   // open percent discount: the percent is typed
var gDscItemObj         : N9  = 102   // 100 % item discount on the last item

// Marker menu item (price 0, reference entry required) that keeps a coupon's reference in the
// check, so it survives a service total and a pick-up. [OBS] pattern of the QR promotion script.
var gCouponMarkerObj    : N9  = 9001

// Post checks with neither a member nor a coupon (1) or not (0: no wait at those tenders).
var gPostAnonymous      : N1  = 0

// What the cashier reads. Keep them short: the POS shows about 32 characters a line.
var gMsgTitle           : A32 = "Loyalty"
var gMsgCard            : A40 = "Scan or type loyalty card / QR"
var gMsgCoupon          : A40 = "Scan or type coupon code"
var gMsgConsent         : A40 = "Lottery: customer agrees? 1=Yes 0=No"
var gMsgConsentBad      : A40 = "Answer 1 (yes) or 0 (no)"
var gMsgJoined          : A40 = "Lottery: member joined"
var gMsgLeft            : A40 = "Lottery: member left, earns points"
var gMsgOffline         : A40 = "Loyalty offline - go on"
var gMsgNoPoints        : A40 = "Points not recorded"
var gMsgNoCoupon        : A40 = "Coupon not applied"
var gMsgNoMember        : A40 = "Identify the member first"
var gMsgNoItems         : A40 = "Ring up the items first"
var gMsgNoCouponOnCheck : A40 = "No loyalty coupon on this check"
var gMsgReleased        : A40 = "Coupon released"
var gMsgVoidLines       : A40 = "Now void its discount line"
var gMsgBadCoupon       : A40 = "Coupon kind not known here"
var gMsgRcptOffline     : A32 = "Loyalty points not recorded"
// -------------------------------- END OF SETTINGS ----------------------------------------

// State of this workstation (one copy of the script runs per workstation)
var gMember             : A64    // member ref IDENT_OK returned, for the check gMemberCheck
var gMemberName         : A40
var gMemberCheck        : N9     // @CKNUM at IDENT (0: identified before the check was begun)
var gPending            : A12    // the request waiting for its reply: IDENT, COUPON, POST ...
var gVoidRef            : A64    // the coupon ref a COUPON_VOID is releasing
var gConsent            : A1     // Y or N, as sent in CONSENT
var gReleased[20]       : A64    // coupon refs released on check gReleasedCheck
var gReleasedN          : N3
var gReleasedCheck      : N9
var gF[16]              : A256   // the last reply's data fields (see ReadReply)


// ==========================================================================================
//  Inquiry keys
// ==========================================================================================

Event Inq : 1                                   // [OBS] touchscreen inquiry event
    var token : A512
    Input token, gMsgCard                       // [OBS] a scanner types into Input
    token = Trim(token)                         // [OBS] Trim
    If @INPUTSTATUS = 0 Or Len(token) = 0       // [OBS] @INPUTSTATUS, Len
        ExitCancel                              // [OBS]
    EndIf
    gPending = "IDENT"
    TxMsg "IDENT", @WSID, @RVC, @CKNUM, token   // [OBS] TxMsg; one field per argument [INF]
    WaitForRxMsg                                // [OBS] the reply runs Event RxMsg : <name>
EndEvent


Event Inq : 2
    var code : A128
    var member : A64
    var subtotal : $12
    If @CKNUM = 0 Or @NUMDTLT = 0
        InfoMessage gMsgTitle, gMsgNoItems       // [OBS] InfoMessage "title", "text"
        ExitCancel
    EndIf
    Input code, gMsgCoupon
    code = Trim(code)
    If @INPUTSTATUS = 0 Or Len(code) = 0
        ExitCancel
    EndIf
    Call ItemsSubtotal(subtotal)
    Call CurrentMember(member)
    gPending = "COUPON"
    TxMsg "COUPON", @WSID, @CKNUM, member, code, subtotal
    WaitForRxMsg
EndEvent


// Releases the last loyalty coupon on the check; the cashier then voids its lines.
Event Inq : 3
    var cref : A64
    Call LastCouponRef(cref)
    If Len(cref) = 0
        InfoMessage gMsgTitle, gMsgNoCouponOnCheck
        ExitCancel
    EndIf
    gVoidRef = cref
    gPending = "COUPON_VOID"
    TxMsg "COUPON_VOID", @WSID, @CKNUM, cref
    WaitForRxMsg
EndEvent


Event Inq : 4
    var member : A64
    var answer : A8
    Call CurrentMember(member)
    If Len(member) = 0
        InfoMessage gMsgTitle, gMsgNoMember
        ExitCancel
    EndIf
    Input answer, gMsgConsent
    answer = Trim(answer)
    UpperCase answer                            // [OBS] UpperCase statement
    If @INPUTSTATUS = 0 Or Len(answer) = 0
        ExitCancel
    EndIf
    If answer = "1" Or answer = "Y"
        gConsent = "Y"
    ElseIf answer = "0" Or answer = "N"         // [OBS] ElseIf
        gConsent = "N"
    Else
        InfoMessage gMsgTitle, gMsgConsentBad
        ExitCancel
    EndIf
    gPending = "CONSENT"
    TxMsg "CONSENT", @WSID, member, "LOTTERY", gConsent
    WaitForRxMsg
EndEvent


Event Inq : 5
    gPending = "PING"
    TxMsg "PING"
    WaitForRxMsg
EndEvent


// ==========================================================================================
//  Final tender: post the check
// ==========================================================================================

Event Final_Tender                              // [OBS] event final_tender
    var member : A64
    var items : A5000                           // [OBS] A1000-A5000 request strings
    var refs : A1000
    var subtotal : $12
    var total : $12
    var bizdate : A8
    Call CurrentMember(member)
    Call BuildPost(items, refs, subtotal, total)
    If Len(member) > 0 Or Len(refs) > 0 Or gPostAnonymous = 1
        Call BusinessDate(bizdate)
        gPending = "POST"
        TxMsg "POST", @WSID, @RVC, @CKNUM, bizdate, member, subtotal, total, items, refs
        WaitForRxMsg
    Else
        Call ForgetCheck
    EndIf
EndEvent


// ==========================================================================================
//  Replies from the gateway: Event RxMsg : <first field of the reply>   [OBS]
// ==========================================================================================

// member ref, display name, tier, points balance, earn mode, message
Event RxMsg : IDENT_OK
    var line : A64
    var text : A80
    Call ReadReply("IDENT_OK")
    gMember = gF[1]
    gMemberName = gF[2]
    gMemberCheck = @CKNUM
    ClearChkInfo                                // [OBS] ClearChkInfo / SaveChkInfo
    Format line As "Member ", gF[2]             // [OBS] Format ... As
    SaveChkInfo line
    If gF[5] = "LOTTERY"
        Format text As gF[6], " - lottery"
    Else
        Format text As gF[6], " - ", gF[4], " pts"
    EndIf
    InfoMessage gMsgTitle, text
    gPending = ""
EndEvent

// reason, message
Event RxMsg : IDENT_FAIL
    Call ReadReply("IDENT_FAIL")
    InfoMessage gMsgTitle, gF[2]
    gPending = ""
EndEvent

// coupon ref, kind, discount object, value, item object, message
Event RxMsg : COUPON_OK
    var obj : N9
    var applied : N1
    Call ReadReply("COUPON_OK")
    obj = gF[3]
    applied = 1
    If gF[2] = "AMOUNT"
        If obj = 0
            obj = gDscAmountObj
        EndIf
        // [OBS] open discount: Key(5, obj), MakeKeys(amount), @KEY_ENTER
        LoadKybdMacro Key(gKeyDiscount, obj), MakeKeys(gF[4]), @KEY_ENTER
    ElseIf gF[2] = "PERCENT"
        If obj = 0
            obj = gDscPercentObj
        EndIf
        LoadKybdMacro Key(gKeyDiscount, obj), MakeKeys(gF[4]), @KEY_ENTER
    ElseIf gF[2] = "ITEM" And Len(gF[5]) > 0
        If obj = 0
            obj = gDscItemObj
        EndIf
        // the free item, then the item discount that takes it off [INF: preset item discount]
        LoadKybdMacro Key(gKeyMenuItem, gF[5]), Key(gKeyDiscount, obj)
    Else
        applied = 0
        InfoMessage gMsgTitle, gMsgBadCoupon
    EndIf
    If applied = 1
        // marker item + reference entry holding the coupon ref [OBS pattern, QR promotion]
        LoadKybdMacro Key(gKeyMenuItem, gCouponMarkerObj), MakeKeys(gF[1]), @KEY_ENTER
        InfoMessage gMsgTitle, gF[6]
    EndIf
    gPending = ""
EndEvent

// reason, message
Event RxMsg : COUPON_FAIL
    Call ReadReply("COUPON_FAIL")
    InfoMessage gMsgTitle, gF[2]
    gPending = ""
EndEvent

Event RxMsg : COUPON_VOID_OK
    If gReleasedCheck <> @CKNUM
        gReleasedN = 0
        gReleasedCheck = @CKNUM
    EndIf
    If gReleasedN < 20
        gReleasedN = gReleasedN + 1
        gReleased[gReleasedN] = gVoidRef
    EndIf
    InfoMessage gMsgReleased, gMsgVoidLines
    gPending = ""
EndEvent

Event RxMsg : CONSENT_OK
    If gConsent = "Y"
        InfoMessage gMsgTitle, gMsgJoined
    Else
        InfoMessage gMsgTitle, gMsgLeft
    EndIf
    gPending = ""
EndEvent

// reason, message
Event RxMsg : CONSENT_FAIL
    Call ReadReply("CONSENT_FAIL")
    InfoMessage gMsgTitle, gF[2]
    gPending = ""
EndEvent

// points earned, points balance, tickets earned, wallet points, receipt lines (up to 8)
Event RxMsg : POST_OK
    var i : N3
    Call ReadReply("POST_OK")
    ClearChkInfo
    For i = 5 To 12                             // [OBS] For ... To ... EndFor
        If Len(gF[i]) > 0
            SaveChkInfo gF[i]
        EndIf
    EndFor
    Call ForgetCheck
EndEvent

// reason, message
Event RxMsg : POST_FAIL
    Call ReadReply("POST_FAIL")
    ClearChkInfo
    SaveChkInfo gMsgRcptOffline
    InfoMessage gMsgTitle, gF[2]
    Call ForgetCheck
EndEvent

// reason, message: a request the gateway could not read, or a coupon it cannot release
Event RxMsg : ERROR
    Call ReadReply("ERROR")
    InfoMessage gMsgTitle, gF[2]
    If gPending = "POST"
        ClearChkInfo
        SaveChkInfo gMsgRcptOffline
        Call ForgetCheck
    EndIf
    gPending = ""
EndEvent

// state (STANDALONE, ONLINE, OFFLINE), version
Event RxMsg : PONG
    var mine : A40
    var theirs : A40
    Call ReadReply("PONG")
    Format mine As "pms", gInterface, " v", gScriptVersion, " timeout ", gTimeoutS, " s"
    Format theirs As "Gateway ", gF[2], " ", gF[1]
    InfoMessage mine, theirs
    gPending = ""
EndEvent

// No reply within the interface's timeout (or no connection): tell the cashier, go on.
Event RxMsg : _TIMEOUT                          // [OBS] _TIMEOUT
    If gPending = "POST"
        ClearChkInfo
        SaveChkInfo gMsgRcptOffline
        InfoMessage gMsgOffline, gMsgNoPoints
        Call ForgetCheck
    ElseIf gPending = "COUPON"
        InfoMessage gMsgOffline, gMsgNoCoupon
    Else
        InfoMessage gMsgTitle, gMsgOffline
    EndIf
    gPending = ""
EndEvent


// ==========================================================================================
//  Subroutines
// ==========================================================================================

// Reads the reply's fields into gF[1..], data fields only. [INF] RxMsg: whether its first
// variable receives the reply's name or its first data field is not known, so both are
// handled: if gF[1] holds the name, everything moves down one place.
Sub ReadReply(Var name : A20)                   // [OBS] Sub with Var parameter
    var i : N3
    For i = 1 To 16
        gF[i] = ""
    EndFor
    RxMsg gF[1], gF[2], gF[3], gF[4], gF[5], gF[6], gF[7], gF[8], gF[9], gF[10], \
          gF[11], gF[12], gF[13], gF[14], gF[15], gF[16]
    If gF[1] = name
        For i = 1 To 15
            gF[i] = gF[i + 1]
        EndFor
        gF[16] = ""
    EndIf
EndSub

// The member identified for this check, or "". A member identified before the check was
// begun (@CKNUM 0) belongs to the next check; one left from another check is forgotten.
Sub CurrentMember(Ref member)                   // [OBS] Ref parameter
    member = ""
    If Len(gMember) > 0
        If gMemberCheck = 0
            gMemberCheck = @CKNUM
        EndIf
        If gMemberCheck = @CKNUM
            member = gMember
        ElseIf @CKNUM <> 0
            Call ForgetCheck
        EndIf
    EndIf
EndSub

Sub ForgetCheck
    gMember = ""
    gMemberName = ""
    gMemberCheck = 0
    gReleasedN = 0
    gPending = ""
EndSub

// The menu items' total, before discounts, without the coupon markers.
Sub ItemsSubtotal(Ref subtotal)
    var i : N5
    subtotal = 0
    For i = 1 To @NUMDTLT                       // [OBS] @NUMDTLT / @DTL_* walk
        If @DTL_TYPE[i] = "M" And @DTL_IS_VOID[i] = 0 And @DTL_OBJECT[i] <> gCouponMarkerObj
            subtotal = subtotal + @DTL_TTL[i]
        EndIf
    EndFor
EndSub

// The reference entry right after detail i, if there is one. [INF] @DTL_NAME of an R detail
// is the text typed as the reference.
Sub RefAfter(Var i : N5, Ref cref)
    cref = ""
    If i < @NUMDTLT
        If @DTL_TYPE[i + 1] = "R" And @DTL_IS_VOID[i + 1] = 0
            cref = Trim(@DTL_NAME[i + 1])
        EndIf
    EndIf
EndSub

Sub IsReleased(Var cref : A64, Ref released)
    var k : N3
    released = 0
    If gReleasedCheck = @CKNUM
        For k = 1 To gReleasedN
            If gReleased[k] = cref
                released = 1
            EndIf
        EndFor
    EndIf
EndSub

// The ref of the last coupon marker on the check that is not void and not released.
Sub LastCouponRef(Ref last)
    var i : N5
    var cref : A64
    var released : N1
    last = ""
    For i = 1 To @NUMDTLT
        If @DTL_TYPE[i] = "M" And @DTL_IS_VOID[i] = 0 And @DTL_OBJECT[i] = gCouponMarkerObj
            Call RefAfter(i, cref)
            Call IsReleased(cref, released)
            If Len(cref) > 0 And released = 0
                last = cref
            EndIf
        EndIf
    EndFor
EndSub

// POST's items (qty*object*total joined by ";"), coupon refs (joined by ";"), the items'
// subtotal and the total after the check's discounts. Voided lines are skipped.
Sub BuildPost(Ref items, Ref refs, Ref subtotal, Ref total)
    var i : N5
    var n : N5
    var discounts : $12
    var cref : A64
    var released : N1
    items = ""
    refs = ""
    subtotal = 0
    discounts = 0
    n = 0
    For i = 1 To @NUMDTLT
        If @DTL_IS_VOID[i] = 0
            If @DTL_TYPE[i] = "M" And @DTL_OBJECT[i] = gCouponMarkerObj
                Call RefAfter(i, cref)
                Call IsReleased(cref, released)
                If Len(cref) > 0 And released = 0
                    If Len(refs) > 0
                        Format refs As refs, ";", cref
                    Else
                        refs = cref
                    EndIf
                EndIf
            ElseIf @DTL_TYPE[i] = "M"
                If n > 0
                    Format items As items, ";"
                EndIf
                Format items As items, @DTL_QTY[i], "*", @DTL_OBJECT[i], "*", @DTL_TTL[i]
                n = n + 1
                subtotal = subtotal + @DTL_TTL[i]
            ElseIf @DTL_TYPE[i] = "D"
                discounts = discounts + @DTL_TTL[i]
            EndIf
        EndIf
    EndFor
    total = subtotal + discounts
EndSub

// YYYYMMDD. [OBS] @YEAR has two digits (scripts print @YEAR + 2000). [INF] the calendar date
// stands for the business date (RES keeps that in its database; see INSTALL.md).
Sub BusinessDate(Ref bizdate)
    var year : N5
    year = @YEAR
    If year < 100
        year = year + 2000
    EndIf
    Format bizdate As year{04}, @MONTH{02}, @DAY{02}   // [OBS] {04} / {02} format specs
EndSub
